"""diagnostics: the reference server's ``metadata.token_mismatch`` extra says what the stored state says.

CONTEXT.md promises no such key ("Not every server has our extras"): this checker judges it only when a
server offers it, and is ``unknown`` with the reason when it does not. The extra's contract
(docs/reference_server.md, "GET metadata extras"), per ``GET /sessions/{id}`` body:

- ``null`` when the session has no stored messages, or when the stored token ids equal the canonical
  tokenization of the stored messages (the chat template's rendering with ``add_generation_prompt=False``,
  encoded without added special tokens) up to ``max_trim_tokens`` trailing tokens of the canonical one
  (the stored tokens are a prefix of it, at most that many shorter);
- else an object: ``index`` (the first position where they differ, or the shorter length when one is a
  prefix of the other), ``canonical_len``, ``actual_len``, ``canonical_tokens`` / ``actual_tokens`` (8
  tokens of each from ``index``) and ``canonical_text`` / ``actual_text`` (those tokens decoded, special
  tokens kept);
- ``{"error": "..."}`` when the server could not compute it (accepted: the contract allows it).

Judged per session state (the state the other checkers read: final, else the last GET before the
DELETE), recomputed with the run's tokenizer (``target.tokenizer``) from the body's own
``metadata.messages`` and token ids (the run's token key, ``ops.find_token_key``). Unknown with the
reason: no body carries the key; the messages are not returned (a session state without
``metadata.messages``); the token ids are not found; the tokenizer cannot be loaded or its template
cannot render the stored messages. Whether ``null`` is right when the stored tokens are a proper prefix
of the canonical ones depends on the server's ``max_trim_tokens``: known from the run's config
(``checks.options.max_trim_tokens``, ``target.max_trim_tokens``, ``--max-trim-tokens`` in
``target.server_args``) or, for the reference server the harness starts itself (``target.kind =
"reference"``, not a sim ``--target``), its default; otherwise that one question is unknown and the
rest (the object's fields, a ``null`` where the tokens differ, a report where they are equal) is judged.
A mismatch is not a violation (on a reasoning template it is the rule): only a report that disagrees
with the state it sits in is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.checkers.base import Verdict, Violation, verdict
from harness.checkers.ops import Snapshot, pair_ops, server_max_trim, snapshots
from harness.checkers.stream import Keyed, Part, RunContext, check_whole, merge_violations
from harness.rundata import RunData

KEY = "token_mismatch"
WINDOW = 8  # tokens of each side the report shows from the first difference
FIELDS = ("index", "canonical_len", "actual_len", "canonical_tokens", "actual_tokens", "canonical_text", "actual_text")


def _tokenizer(run: RunData) -> tuple[Any, str]:
    target = run.scenario.get("target")
    name = target.get("tokenizer") if isinstance(target, dict) else None
    try:
        from harness.tokenizer import load_tokenizer

        return load_tokenizer(name if isinstance(name, str) else None), ""
    except Exception as exc:  # another box's folder: nothing to recompute with
        return None, f"the run's tokenizer cannot be loaded here ({type(exc).__name__})"


def expected_report(tok: Any, messages: list[Any], token_ids: list[int], trim: int | None) -> tuple[Any, bool]:
    """What the contract says ``token_mismatch`` is: (value, decided).

    ``value`` is None or the report object. ``decided`` is False when the answer depends on an unknown
    ``max_trim_tokens`` (the stored tokens are a proper prefix of the canonical ones): then ``value`` is
    the report, and ``null`` is right as well. Raises when the template cannot render the messages.
    """
    if not messages:
        return None, True
    text = str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
    canonical = [int(x) for x in tok.encode(text, add_special_tokens=False)] if text else []
    n = len(token_ids)
    i = 0
    for a, b in zip(canonical, token_ids, strict=False):
        if a != b:
            break
        i += 1
    if i == n and len(canonical) == n:
        return None, True
    prefix = i == n  # the stored tokens are a proper prefix of the canonical ones
    if prefix and trim is not None and len(canonical) - n <= trim:
        return None, True
    c_win, a_win = canonical[i : i + WINDOW], token_ids[i : i + WINDOW]
    report = {
        "index": i,
        "canonical_len": len(canonical),
        "actual_len": n,
        "canonical_tokens": c_win,
        "actual_tokens": a_win,
        "canonical_text": str(tok.decode(c_win, skip_special_tokens=False)),
        "actual_text": str(tok.decode(a_win, skip_special_tokens=False)),
    }
    return report, not prefix or trim is not None


def _differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    out = []
    for f in FIELDS:
        if f not in got:
            out.append(f"{f} missing")
        elif got[f] != want[f]:
            out.append(f"{f} {_short(got[f])} != {_short(want[f])}")
    return out


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


class Diagnostics:
    name = "diagnostics"

    def check(self, run: RunData) -> Verdict:
        return check_whole(self, run)

    # the rules a group of sessions at a time (harness/checkers/stream.py); check() is the one group of them all

    def part(self, part: Part) -> dict[str, Any]:
        run = part.run
        snaps, _ = snapshots(run, pair_ops(run.history), part.context.token_key)
        mine = sorted((sid, s) for sid, s in snaps.items() if part.mine(sid))
        counts = {"states": 0, "offered": 0, "judged": 0, "reports": 0, "errors": 0, "undecided": 0}
        unknown: list[tuple[str, str]] = []
        out: list[Keyed] = []
        carrying = [(sid, s) for sid, s in mine if KEY in s.metadata]
        counts["states"], counts["offered"] = len(mine), len(carrying)
        if not carrying:
            return {"counts": counts, "unknown": unknown, "out": out}
        trim, _ = server_max_trim(run)
        tok, why = _tokenizer(run)
        if tok is None:
            return {"counts": counts, "unknown": [("", why)], "out": out}
        for sid, snap in carrying:
            problem = self._one(tok, snap, trim, counts, out)
            if problem:
                unknown.append((sid, problem))
        return {"counts": counts, "unknown": unknown[:5], "out": out}

    def _one(self, tok: Any, snap: Snapshot, trim: int | None, counts: dict[str, int], out: list[Keyed]) -> str:
        sid = snap.session
        got = snap.metadata[KEY]
        if isinstance(got, dict) and set(got) == {"error"} and isinstance(got["error"], str):
            counts["errors"] += 1
            return ""
        messages = snap.metadata.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return f"{sid}: metadata.messages not returned, the stored messages are not known"
        records = snap.records if isinstance(snap.records, list) else []
        if any(
            isinstance(r, dict) and isinstance(r.get("request"), dict) and r["request"].get("chat_template_kwargs")
            for r in records
        ):
            # the contract names the template's rendering of the stored messages, not whether the session's
            # chat_template_kwargs apply to it (CONTEXT.md says nothing of them): not decidable here
            return (
                f"{sid}: the session's requests carry chat_template_kwargs; whether the canonical rendering "
                "applies them is not specified"
            )
        ids = snap.token_ids
        if snap.token_key is None or not isinstance(ids, list) or not all(isinstance(x, int) for x in ids):
            return f"{sid}: the stored token ids are not found ({snap.token_reason or 'not a list of ints'})"
        try:
            want, decided = expected_report(tok, messages, ids, trim)
        except Exception as exc:  # the template refuses the stored messages: nothing canonical to compare
            return f"{sid}: the chat template cannot render the stored messages ({type(exc).__name__})"
        counts["judged"] += 1
        counts["reports"] += got is not None
        where = f"metadata.{KEY} of {sid}"
        if got is None:
            if want is None or not decided:
                counts["undecided"] += want is not None
                return ""
            what = "tokens differ" if want["index"] < len(ids) else "tokens are shorter by more than max_trim_tokens"
            msg = (
                f"{where} is null, but the stored tokens ({len(ids)}) and the canonical tokenization of the "
                f"stored messages ({want['canonical_len']}) disagree: {what} (from token {want['index']})"
            )
            out.append(((sid, 0), Violation(msg, snap.indices, sid, "mismatch_not_reported")))
        elif not isinstance(got, dict):
            msg = f"{where} is {_short(got)}: neither null nor a report object"
            out.append(((sid, 0), Violation(msg, snap.indices, sid, "mismatch_malformed")))
        elif want is None:
            msg = (
                f"{where} reports a mismatch at {_short(got.get('index'))}, but the stored tokens equal the "
                f"canonical tokenization of the stored messages ({len(ids)} tokens, within max_trim_tokens)"
            )
            out.append(((sid, 0), Violation(msg, snap.indices, sid, "mismatch_spurious")))
        else:
            diffs = _differences(got, want)
            if diffs:
                msg = f"{where} disagrees with the stored state: " + "; ".join(diffs)
                out.append(((sid, 0), Violation(msg, snap.indices, sid, "mismatch_wrong")))
        return ""

    def reduce(self, parts: Sequence[dict[str, Any]], context: RunContext) -> Verdict:
        c = {k: sum(p["counts"][k] for p in parts) for k in parts[0]["counts"]} if parts else {}
        unknown = [why for _, why in sorted(kv for p in parts for kv in p["unknown"])][:5]
        trim, source = server_max_trim(RunData(scenario=context.scenario, history=[]))
        if not c.get("states"):
            return verdict(self.name, [], notes="no session state recorded: nothing to check")
        if not c["offered"]:
            why = f"no GET /sessions/{{id}} metadata carries {KEY} (not every server has our extras)"
            return verdict(self.name, [], unknown=[why])
        if c["undecided"]:
            unknown.append(
                f"{c['undecided']} null {KEY} where the stored tokens are a proper prefix of the canonical ones: "
                "right or not depending on the server's max_trim_tokens, which the run does not know"
            )
        t = f"max_trim_tokens={trim} ({source})" if trim is not None else "max_trim_tokens unknown"
        notes = (
            f"{c['judged']} of {c['states']} session states judged ({c['offered']} carry {KEY}, "
            f"{c['reports']} report a mismatch, {c['errors']} the error form), {t}"
        )
        return verdict(self.name, merge_violations(p["out"] for p in parts), unknown=unknown, notes=notes)
