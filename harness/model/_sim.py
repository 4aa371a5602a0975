"""The simpy model of a session-server deployment, request by request.

What is modelled, and why each piece is there (docs/model.md has the long
version):

- **a server process = one event loop = one CPU**. Every piece of handler
  code between two ``await`` points that really yield is one *burst* on that
  CPU, served first come first served. asyncio runs ready callbacks in FIFO
  order and never pre-empts a coroutine, so a FIFO single server is the loop.
  A burst that becomes ready at ``now`` starts at ``max(now, cpu_free)``
  (Lindley's recursion); its effects on shared state (locks, ``closing``,
  ``num_assistant``) are applied when it becomes ready, which keeps them in
  the same order the loop would run them. One ``timeout`` per burst, none
  per token.
- **tokenization** runs inline (inside the burst: the loop is blocked) or in
  a thread (``asyncio.to_thread``): the loop is free, the job takes a slot of
  the thread pool and, for the GIL-holding share of its cost
  (``gil_fraction``), the same CPU as the loop. Then the coroutine needs the
  loop again to resume, and that wait is part of ``tokenize_*_ms`` exactly as
  the server measures it.
- **the session lock** is FIFO with hand-over, like ``asyncio.Lock``. Inline,
  Phase 1 never yields with the lock held, so a same-session request never
  waits for it; in a thread it is held across the thread hop.
- **Phase 2** is the backend: the fake's latency models (the very functions
  the fake uses, ``draw_delay``), its fault rules (``Rule.matches`` and the
  rule's probability), its event loop (the backend share of the proxy
  overhead) and an optional concurrency limit.
- **agents**: open-loop session arrivals, a concurrency limit, think time,
  abort / 5xx retries, client timeouts (the abandoned request keeps running
  server-side), collect-then-delete, DELETE during the proxy phase and
  duplicate in-flight copies.

Everything random comes from ``random.Random`` instances seeded from
(seed, purpose); there is no wall clock anywhere, so a model run is a pure
function of its params and seed.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from array import array
from collections import Counter, deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import simpy

from harness.fake_sglang.latency import draw_delay
from harness.fake_sglang.plan import FaultSpec

from ._params import ModelParams

if TYPE_CHECKING:
    from harness.report.stats import LatencyStats

__all__ = ["BUCKETS", "ModelResult", "run_model"]

BUCKETS: tuple[str, ...] = ("lock_wait_ms", "tokenize_in_ms", "proxy_elapsed_ms", "tokenize_out_ms", "total_ms")
CLIENT = "client_request_ms"
CHAT_PATH = "/v1/chat/completions"
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
_MALFORMED = frozenset({"no_meta_info", "null_content", "logprob_mismatch", "invalid_json"})
_CUT = frozenset({"close_mid_body", "sse_cut"})
TIMEOUT = -1  # a status the agent gives itself when it stops waiting

Gen = Generator[simpy.Event, Any, Any]


def _no_param(key: str) -> Any:
    return None


def _rng(seed: int, purpose: str) -> random.Random:
    h = hashlib.sha256(f"{seed}\x1f{purpose}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


@dataclass
class ModelResult:
    """Per chat request (one ``chat_done`` line each), the same buckets the server logs, in ms."""

    params: ModelParams
    buckets: dict[str, array[float]]
    client_request_ms: array[float]
    prompt_tokens: array[int]
    completion_tokens: array[int]
    outcomes: Counter[str] = field(default_factory=Counter)
    sessions_done: int = 0
    sim_time_s: float = 0.0
    stalls: int = 0  # whole-process stalls injected (ModelParams.stalls)
    stall_ms: float = 0.0  # their total duration

    @property
    def requests(self) -> int:
        return len(self.buckets["total_ms"])

    def series(self, name: str) -> array[float]:
        return self.client_request_ms if name == CLIENT else self.buckets[name]

    def stats(self, name: str) -> LatencyStats:
        from harness.report.stats import latency_stats

        return latency_stats(self.series(name))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.params.name,
            "seed": self.params.seed,
            "requests": self.requests,
            "sessions_done": self.sessions_done,
            "sim_time_s": round(self.sim_time_s, 6),
            "outcomes": dict(sorted(self.outcomes.items())),
            "stalls": {"count": self.stalls, "total_ms": round(self.stall_ms, 3)},
            "buckets": {},
        }
        for b in (*BUCKETS, CLIENT):
            out["buckets"][b] = self.stats(b).to_json()
        return out


class _Server:
    __slots__ = ("cpu_free", "threads")

    def __init__(self, threads: int) -> None:
        self.cpu_free = 0.0
        self.threads = [0.0] * max(1, threads)  # a heap of the times each pool thread is free


class _Session:
    __slots__ = ("closing", "held", "key", "num_assistant", "ordinal", "removed", "server", "waiters")

    def __init__(self, server: _Server, key: str) -> None:
        self.server = server
        self.key = key
        self.held = False
        self.waiters: deque[simpy.Event] = deque()
        self.closing = False
        self.removed = False
        self.num_assistant = 0
        self.ordinal = 0  # backend requests so far (the plan's per-session ``ordinal``)


class _Answer:
    """What the backend did with one request, decided when the request reaches it."""

    __slots__ = ("done_at", "finish", "kind", "status", "tokens")

    def __init__(self, kind: str, status: int, done_at: float, tokens: int, finish: str) -> None:
        self.kind = kind  # ok | http | transport | malformed
        self.status = status
        self.done_at = done_at
        self.tokens = tokens
        self.finish = finish


class _Model:
    def __init__(self, params: ModelParams, env: simpy.Environment) -> None:
        self.p = params
        self.env = env
        c = params.costs
        d = params.deployment
        ms = 1e-3
        self.thread_mode = d.tokenize_in_thread
        self.hold = d.lock_restore
        self.pre_frac = c.http_pre_fraction
        self.pre_a = c.http_ms * c.http_pre_fraction * ms
        self.pre_b = c.http_per_token_ms * c.http_pre_fraction * ms
        self.post_a = c.http_ms * (1 - c.http_pre_fraction) * ms
        self.post_b = c.http_per_token_ms * (1 - c.http_pre_fraction) * ms
        lf = c.proxy_loop_fraction
        self.send_a = c.proxy_ms * lf / 2 * ms
        self.send_b = c.proxy_per_token_ms * lf / 2 * ms
        self.recv_a, self.recv_b = self.send_a, self.send_b
        bf = min(c.proxy_backend_fraction, max(0.0, 1.0 - lf))
        self.bcpu_a = c.proxy_ms * bf * ms
        self.bcpu_b = c.proxy_per_token_ms * bf * ms
        df = max(0.0, 1.0 - lf - bf)
        self.pdelay_a = c.proxy_ms * df * ms
        self.pdelay_b = c.proxy_per_token_ms * df * ms
        self.ti_a, self.ti_b = c.tokenize_in_ms * ms, c.tokenize_in_per_token_ms * ms
        self.to_a, self.to_b = c.tokenize_out_ms * ms, c.tokenize_out_per_token_ms * ms
        self.control = c.control_ms * ms
        self.short = (c.http_ms * c.http_pre_fraction + c.control_ms) * ms / 2
        self.resume = c.resume_ms * ms
        self.gil = min(1.0, max(0.0, c.gil_fraction))
        self.switch = c.gil_switch_ms * ms
        self.hop = c.thread_hop_ms * ms
        self.untimed = c.untimed_ms * ms
        self.cl_a = c.client_ms * ms / 2
        self.cl_b = c.client_per_token_ms * ms / 2
        self.clients = [0.0] * d.client_loops  # each agent's loop's next free time
        self.cores = d.machine_cores
        self.timeout_s = params.workload.timeout_s
        self.background = d.machine_background
        self.servers = [_Server(d.threads) for _ in range(max(1, d.processes))]
        self.backend_loops = [0.0] * d.backend_loops
        self.backend_slots: list[float] | None = [0.0] * d.backend_concurrency if d.backend_concurrency > 0 else None
        self.plan = params.plan
        self.rules = params.plan.rules
        self.lat = params.plan.latency
        gen = params.plan.generation
        self.words = (gen.min_words, gen.max_words)
        self.tpw = params.tokens.tokens_per_word
        self.latency_on = self.lat.model != "none" or self.lat.spike_probability > 0
        self.global_ordinal = 0
        seed = params.seed
        self.rng_backend = _rng(seed, "backend")
        self.rng_fault = _rng(seed, "faults")
        self.rng_latency = _rng(seed, "latency")
        self.rng_noise = _rng(seed, "noise")
        nz = {k: tuple(v * ms for v in t) for k, t in params.noise.items() if t}
        self.nz_in, self.nz_out = nz.get("tokenize_in", ()), nz.get("tokenize_out", ())
        self.nz_http, self.nz_proxy = nz.get("http", ()), nz.get("proxy", ())
        self.nz_client = nz.get("client", ())
        # results
        self.buckets: dict[str, array[float]] = {b: array("d") for b in BUCKETS}
        self._lw, self._ti, self._px, self._to, self._tt = (self.buckets[b] for b in BUCKETS)
        self.client = array("d")
        self.ptoks: array[int] = array("q")
        self.ctoks: array[int] = array("q")
        self.outcomes: Counter[str] = Counter()
        self.sessions_done = 0
        w = params.workload
        self.slots_free = w.concurrency
        self.slot_waiters: deque[simpy.Event] = deque()
        self.end_time = 0.0  # when the last session finished (a stall process may run a little past it)
        self.stall_count = 0
        self.stall_ms = 0.0

    # -- recording ---------------------------------------------------------------

    def _record(self, lw: float, ti: float, px: float, to: float, total: float, outcome: str, pt: int, ct: int) -> None:
        self._lw.append(lw * 1000.0)
        self._ti.append(ti * 1000.0)
        self._px.append(px * 1000.0)
        self._to.append(to * 1000.0)
        self._tt.append(total * 1000.0)
        self.ptoks.append(pt)
        self.ctoks.append(ct)
        self.outcomes[outcome] += 1

    def _nz(self, table: tuple[float, ...]) -> float:
        """One residual drawn from a calibration's empirical residual quantiles (seconds)."""
        return table[int(self.rng_noise.random() * len(table))] if table else 0.0

    # -- CPU and locks -------------------------------------------------------------

    def _stretch(self, own_free: float) -> float:
        """How much slower CPU work runs now on a machine with ``machine_cores`` cores.

        Processor sharing, approximated per request: every busy loop (servers, backend, agents), the
        caller's own and ``machine_background`` other busy processes share the cores evenly.
        """
        now = self.env.now
        busy = self.background + (0 if own_free > now else 1)
        for srv in self.servers:
            if srv.cpu_free > now:
                busy += 1
        for x in self.backend_loops:
            if x > now:
                busy += 1
        for x in self.clients:
            if x > now:
                busy += 1
        return busy / self.cores if busy > self.cores else 1.0

    def _thread_job(self, srv: _Server, cost: float, ready: float, extra: float = 0.0) -> float:
        """A thread-pool job ready at ``ready``; returns when it finishes (FIFO pool; GIL share on the loop's CPU).

        ``extra`` is a delay that holds neither the GIL nor the loop (a residual drawn from calibration:
        the thread waiting to be scheduled). Evaluated when the burst that dispatches it is evaluated
        (a fraction of a millisecond early), which saves one event per hop.
        """
        slot = heapq.heappop(srv.threads)
        start = ready if slot < ready else slot
        g = cost * self.gil
        if g > 0.0:
            # the GIL: wait for the loop's backlog, but no longer than the switch interval
            s2 = start if srv.cpu_free < start else min(srv.cpu_free, start + self.switch)
            end = s2 + cost + self.hop + extra
            srv.cpu_free = (srv.cpu_free if srv.cpu_free > s2 else s2) + g
        else:
            end = start + cost + self.hop + extra
        heapq.heappush(srv.threads, end)
        return end

    def _release(self, sess: _Session) -> None:
        if sess.waiters:
            sess.waiters.popleft().succeed()  # hand-over: the lock stays held for the next in line
        else:
            sess.held = False

    def _wait_lock(self, srv: _Server, sess: _Session, t: float) -> Gen:
        """The burst so far ends at ``t``; queue for the lock; returns (resume time, lock_wait)."""
        env = self.env
        srv.cpu_free = t
        if t > env.now:
            yield env.timeout(t - env.now)
        ev = env.event()
        sess.waiters.append(ev)
        w0 = env.now
        yield ev
        now = env.now
        rs = now if srv.cpu_free < now else srv.cpu_free
        return rs + self.resume, rs - w0

    # -- the backend -------------------------------------------------------------------

    def _fault(self, sess: _Session, turn: int, attempt: int, ordinal: int) -> FaultSpec | None:
        go = self.global_ordinal
        self.global_ordinal = go + 1
        for rule in self.rules:
            if not rule.matches(
                session=sess.key, turn=turn, attempt=attempt, ordinal=ordinal, global_ordinal=go, path=CHAT_PATH
            ):
                continue
            if rule.probability < 1.0 and self.rng_fault.random() >= rule.probability:
                continue
            return None if rule.fault.name == "none" else rule.fault
        return None

    def _backend(self, sess: _Session, prompt: int, turn: int, attempt: int, now: float) -> _Answer:
        """The backend receives the request at ``now``: decide its fault, tokens, latency, when it answers."""
        ordinal = sess.ordinal
        sess.ordinal = ordinal + 1
        fault = self._fault(sess, turn, attempt, ordinal) if self.rules else None
        loops = self.backend_loops
        if loops:
            i = loops.index(min(loops)) if len(loops) > 1 else 0
            b0 = now if loops[i] < now else loops[i]
            bend = b0 + (self.bcpu_a + self.bcpu_b * prompt) * (self._stretch(loops[i]) if self.cores else 1.0)
            loops[i] = bend
        else:
            bend = now + self.bcpu_a + self.bcpu_b * prompt
        bend += self.pdelay_a + self.pdelay_b * prompt
        name = fault.name if fault is not None else None
        get = fault.get if fault is not None else _no_param
        if name is not None:
            if name.startswith("http_"):
                return _Answer("http", int(name[5:]), bend, 0, "")
            if name == "reset":
                return _Answer("transport", 502, bend, 0, "")
            if name == "hang":
                return _Answer("transport", 502, bend + float(get("seconds")), 0, "")
        lo, hi = self.words
        full = int(self.rng_backend.randint(lo, hi) * self.tpw + 0.5) + 1
        spike = None
        if name == "spike":
            ms = get("ms")
            spike = float(ms) if ms is not None else (self.lat.spike_ms or 2000.0)
        on = self.latency_on or spike is not None
        delay = draw_delay(self.lat, self.rng_latency, spike_ms=spike) if on else None
        finish, k = "stop", full
        if name == "length":
            t = get("tokens")
            k = min(t if t is not None else full // 2, full - 1)
            finish = "length"
        wait = 0.0
        if name == "abort":
            t = get("tokens")
            if t is not None:
                a = min(int(t), max(0, k - 1))
            else:
                frac = get("fraction")
                if frac is None:
                    frac = self.rng_backend.uniform(0.1, 0.9)
                a = min(int(k * frac), max(0, k - 1))
            if delay is not None:
                wait = delay.total(full) * (a / max(1, full))
            k, finish = a, "abort"
        elif delay is not None:
            wait = delay.total(k)
        if name == "slow_drip":
            wait += float(get("seconds"))
        slots = self.backend_slots
        if slots is not None:
            s = heapq.heappop(slots)
            g0 = bend if s < bend else s
            heapq.heappush(slots, g0 + wait)
            done = g0 + wait
        else:
            done = bend + wait
        if name in _CUT:
            return _Answer("transport", 502, done, 0, "")
        if name in _MALFORMED:
            return _Answer("malformed", 502, done, k, finish)
        return _Answer("ok", 200, done, k, finish)

    # -- a chat request, server side ------------------------------------------------------

    def chat(self, srv: _Server, sess: _Session, prompt: int, turn: int, attempt: int, deadline: float) -> Gen:
        """One POST .../chat/completions, as app.py runs it. Returns (status, aborted, completion tokens).

        ``deadline`` is when the agent stops waiting; past it, the rest of the request keeps running on
        its own (as the server does when a client leaves) and the agent gets ``TIMEOUT``.
        """
        env = self.env
        now = env.now
        f = self._stretch(srv.cpu_free) if self.cores else 1.0
        t0 = (now if srv.cpu_free < now else srv.cpu_free) + self.untimed * f
        if sess.removed or sess.closing:
            end = t0 + self.short
            srv.cpu_free = end
            yield env.timeout(end - now)
            self._record(0.0, 0.0, 0.0, 0.0, end - t0, "not_found", 0, 0)
            return 404, False, 0
        http = self.pre_a + self.pre_b * prompt + self.post_a + self.post_b * prompt
        if self.nz_http:
            http = max(0.0, http + self._nz(self.nz_http))
        http *= f
        pre = http * self.pre_frac
        post = http - pre
        t = t0 + pre
        lock_wait = 0.0
        if sess.held:
            t, lock_wait = yield from self._wait_lock(srv, sess, t)
        else:
            sess.held = True
        # ---- Phase 1 (under the lock)
        if sess.closing:
            self._release(sess)
            srv.cpu_free = t
            yield env.timeout(t - env.now)
            self._record(lock_wait, 0.0, 0.0, 0.0, t - t0, "not_found", 0, 0)
            return 404, False, 0
        tok_in, t = yield from self._tokenize(srv, (self.ti_a + self.ti_b * prompt) * f, self.nz_in, t)
        expected = sess.num_assistant
        if not self.hold:
            self._release(sess)
        # ---- Phase 2 (no lock unless lock_restore)
        proxy_start = t
        t += (self.send_a + self.send_b * prompt) * f
        srv.cpu_free = t
        # the backend is evaluated now for a request that reaches it at t: one event, not two
        ans = self._backend(sess, prompt, turn, attempt, t)
        if self.nz_proxy:
            ans.done_at = max(t, ans.done_at + self._nz(self.nz_proxy))
        rest = self._after_backend(srv, sess, prompt, ans, t0, proxy_start, lock_wait, tok_in, expected, post)
        if ans.done_at > deadline:
            env.process(rest)
            if deadline > env.now:
                yield env.timeout(deadline - env.now)
            return TIMEOUT, False, 0
        result = yield from rest
        return result

    def _tokenize(self, srv: _Server, cost: float, noise_table: tuple[float, ...], t: float) -> Gen:
        """Tokenization starting at ``t``: (time it took, when the loop resumes).

        Inline it holds the loop for its cost; in a thread the loop is free
        meanwhile and the request resumes once the job ends and the loop is idle.
        """
        noise = max(-cost, self._nz(noise_table)) if noise_table else 0.0
        if not self.thread_mode:
            return cost + noise, t + cost + noise
        env = self.env
        srv.cpu_free = t
        end = self._thread_job(srv, cost, t, noise)
        yield env.timeout(end - env.now)
        now = env.now
        rs = now if srv.cpu_free < now else srv.cpu_free
        return rs - t, rs + self.resume

    def _after_backend(
        self,
        srv: _Server,
        sess: _Session,
        prompt: int,
        ans: _Answer,
        t0: float,
        proxy_start: float,
        lock_wait: float,
        tok_in: float,
        expected: int,
        post: float,
    ) -> Gen:
        env = self.env
        if ans.done_at > env.now:
            yield env.timeout(ans.done_at - env.now)
        now = env.now
        rs = now if srv.cpu_free < now else srv.cpu_free
        f = self._stretch(srv.cpu_free) if self.cores else 1.0
        t = rs + (self.recv_a + self.recv_b * prompt) * f
        proxy = t - proxy_start
        if ans.kind != "ok":
            t += post
            if self.hold:
                self._release(sess)
            srv.cpu_free = t
            yield env.timeout(t - env.now)
            outcome = {"http": "upstream_error", "transport": "transport_error"}.get(ans.kind, "bad_gateway")
            self._record(lock_wait, tok_in, proxy, 0.0, t - t0, outcome, prompt, 0)
            return ans.status, False, 0
        aborted = ans.finish == "abort"
        tok_out = 0.0
        if not aborted:
            tok_out, t = yield from self._tokenize(srv, (self.to_a + self.to_b * ans.tokens) * f, self.nz_out, t)
        # ---- Phase 3 (under the lock)
        if not self.hold:
            if sess.held:
                t, w = yield from self._wait_lock(srv, sess, t)
                lock_wait += w
            else:
                sess.held = True
        if sess.closing:
            outcome = "closing_skip"
        elif sess.num_assistant != expected:
            outcome = "state_changed_skip"
        elif aborted:
            outcome = "aborted"
        else:
            sess.num_assistant += 1
            outcome = "committed"
        self._release(sess)
        t += post
        srv.cpu_free = t
        yield env.timeout(t - env.now)
        self._record(lock_wait, tok_in, proxy, tok_out, t - t0, outcome, prompt, ans.tokens)
        return 200, aborted, ans.tokens

    # -- other requests ---------------------------------------------------------------------

    def _control(self, srv: _Server, cost: float) -> Gen:
        env = self.env
        now = env.now
        t = (now if srv.cpu_free < now else srv.cpu_free) + cost
        srv.cpu_free = t
        yield env.timeout(t - now)

    def get(self, srv: _Server, sess: _Session, tokens: int) -> Gen:
        """GET /sessions/{id}: re-renders the whole conversation (token_mismatch) through the executor."""
        env = self.env
        cost = self.ti_a + self.ti_b * tokens
        if sess.removed or sess.closing:
            yield from self._control(srv, self.control)
            return
        if self.thread_mode:
            yield from self._control(srv, self.control / 2)
            end = self._thread_job(srv, cost, env.now)
            yield env.timeout(end - env.now)
            yield from self._control(srv, self.control / 2 + self.resume)
        else:
            yield from self._control(srv, self.control + cost)

    def delete(self, srv: _Server, sess: _Session) -> Gen:
        """DELETE: 404 if gone or closing; else closing first, then the lock, then removal."""
        env = self.env
        now = env.now
        t = (now if srv.cpu_free < now else srv.cpu_free) + self.control
        if sess.removed or sess.closing:
            srv.cpu_free = t
            yield env.timeout(t - now)
            return 404
        sess.closing = True
        if sess.held:
            t, _ = yield from self._wait_lock(srv, sess, t)
        else:
            sess.held = True
        sess.removed = True
        self._release(sess)
        srv.cpu_free = t
        yield env.timeout(t - env.now)
        return 204

    # -- whole-process stalls ----------------------------------------------------------------

    def stalls(self, index: int, srv: _Server) -> Gen:
        """A GC pause / descheduling on one server process: at exponential intervals the loop is taken.

        The stall extends whatever the loop is doing (``cpu_free``) by its duration, so every request
        that needs this loop next (a burst, a resume after a thread hop or the backend's answer) waits
        for it: the correlated delay that independent per-cost residuals cannot produce.
        """
        env = self.env
        st = self.p.stalls
        rng = _rng(self.p.seed, f"stalls{index}")
        table = tuple(d * 1e-3 for d in st.durations_ms)
        total = self.p.workload.sessions
        while self.sessions_done < total:
            yield env.timeout(rng.expovariate(st.rate_per_s))
            if self.sessions_done >= total:
                return
            d = table[int(rng.random() * len(table))]
            now = env.now
            srv.cpu_free = (srv.cpu_free if srv.cpu_free > now else now) + d
            self.stall_count += 1
            self.stall_ms += d * 1000.0

    # -- agents ---------------------------------------------------------------------------------

    def _client(self, cl: int, tokens: int) -> Gen:
        """Half an HTTP call on the agents' loop (build + send, or read + parse + record)."""
        if cl < 0:
            return
        env = self.env
        now = env.now
        cost = self.cl_a + self.cl_b * tokens
        if self.nz_client:
            cost = max(0.0, cost + self._nz(self.nz_client) / 2)
        free = self.clients[cl]
        if self.cores:
            cost *= self._stretch(free)
        t = (now if free < now else free) + cost
        self.clients[cl] = t
        yield env.timeout(t - now)

    def _send_chat(self, cl: int, srv: _Server, sess: _Session, prompt: int, turn: int, attempt: int) -> Gen:
        """One chat call as the agent sees it: send, the server's work, receive; its client latency."""
        env = self.env
        t = env.now
        if cl >= 0:
            yield from self._client(cl, prompt)
        res = yield from self.chat(srv, sess, prompt, turn, attempt, t + self.timeout_s)
        if cl >= 0 and res[0] != TIMEOUT:
            yield from self._client(cl, 0)
        self.client.append((env.now - t) * 1000.0)
        return res

    def _call(self, cl: int, op: Gen) -> Gen:
        yield from self._client(cl, 0)
        res = yield from op
        yield from self._client(cl, 0)
        return res

    def _nemesis_delete(self, cl: int, srv: _Server, sess: _Session, delay: float) -> Gen:
        yield self.env.timeout(delay)
        yield from self._call(cl, self.delete(srv, sess))

    def _dup(self, cl: int, srv: _Server, sess: _Session, prompt: int, turn: int, attempt: int, delay: float) -> Gen:
        yield self.env.timeout(delay)
        res = yield from self._send_chat(cl, srv, sess, prompt, turn, attempt)
        return res

    def agent(self, index: int, intended: float) -> Gen:
        env = self.env
        w = self.p.workload
        rng = _rng(self.p.seed, f"session{index}")
        if intended > env.now:
            yield env.timeout(intended - env.now)
        if self.slots_free > 0:
            self.slots_free -= 1
        else:
            ev = env.event()
            self.slot_waiters.append(ev)
            yield ev
        srv = self.servers[rng.randrange(len(self.servers))]
        turns = rng.randint(*w.turns)
        delete_turn = rng.randrange(turns) if rng.random() < w.delete_during_proxy else -1
        cl = index % len(self.clients) if self.clients else -1
        if w.create:
            yield from self._call(cl, self._control(srv, self.control + self.untimed))
        sess = _Session(srv, f"{index:032x}")
        prompt = self.p.tokens.first_prompt_tokens
        gone = False
        for turn in range(turns):
            if turn > 0:
                lo, hi = w.think_time_s
                think = rng.uniform(lo, hi) if hi > 0 else 0.0
                if think > 0:
                    yield env.timeout(think)
            attempt = retries = timeouts = 0
            completion = -1
            while True:
                if turn == delete_turn and attempt == 0:
                    delay = rng.uniform(*w.delete_delay_ms) / 1000.0
                    env.process(self._nemesis_delete(cl, srv, sess, delay))
                if attempt == 0 and w.duplicate_inflight > 0 and rng.random() < w.duplicate_inflight:
                    delay = rng.uniform(*w.duplicate_delay_ms) / 1000.0
                    dup = env.process(self._dup(cl, srv, sess, prompt, turn, attempt + 1, delay))
                    first = yield from self._send_chat(cl, srv, sess, prompt, turn, attempt)
                    second = yield dup
                    status, aborted, ctoks = second if second[0] == 200 and not second[1] else first
                    attempt += 2
                else:
                    status, aborted, ctoks = yield from self._send_chat(cl, srv, sess, prompt, turn, attempt)
                    attempt += 1
                if status == 200 and not aborted:
                    completion = ctoks
                    break
                if status == TIMEOUT:
                    timeouts += 1
                    if timeouts > w.timeout_retries:
                        break
                    continue
                if status == 404:
                    gone = True
                    break
                if aborted or status in RETRY_STATUSES:
                    retries += 1
                    if retries > w.max_retries:
                        break
                    continue
                break
            if completion < 0:
                break
            prompt += completion + self.p.tokens.turn_tokens
        if not gone:
            if w.collect_at_end:
                yield from self._call(cl, self.get(srv, sess, prompt))
            if w.delete_at_end:
                yield from self._call(cl, self.delete(srv, sess))
        self.sessions_done += 1
        self.end_time = env.now
        if self.slot_waiters:
            self.slot_waiters.popleft().succeed()
        else:
            self.slots_free += 1


def _arrivals(params: ModelParams) -> list[float]:
    w = params.workload
    rng = _rng(params.seed, "arrivals")
    t = 0.0
    out = []
    for i in range(w.sessions):
        if w.arrival_rate > 0 and i > 0:
            t += rng.expovariate(w.arrival_rate)
        out.append(t)
    return out


def run_model(params: ModelParams, *, until_s: float | None = None) -> ModelResult:
    """Simulate the deployment under the workload; deterministic for a given ``params`` (seed included)."""
    env = simpy.Environment()
    m = _Model(params, env)
    for i, t in enumerate(_arrivals(params)):
        env.process(m.agent(i, t))
    if params.stalls.enabled and params.workload.sessions > 0:
        for i, srv in enumerate(m.servers):
            env.process(m.stalls(i, srv))
    env.run(until=until_s)
    return ModelResult(
        params=params,
        buckets=m.buckets,
        client_request_ms=m.client,
        prompt_tokens=m.ptoks,
        completion_tokens=m.ctoks,
        outcomes=m.outcomes,
        sessions_done=m.sessions_done,
        sim_time_s=float(env.now if until_s is not None or not params.stalls.enabled else m.end_time),
        stalls=m.stall_count,
        stall_ms=m.stall_ms,
    )
