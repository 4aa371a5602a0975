"""``[target] kind = "command"``: the user's own server, validated at load (file, key, fix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner._procs import fill_placeholders
from harness.scenario import COMMAND_PLACEHOLDERS, ScenarioError, load_scenario

CMD = 'cmd = "{python} -m their_server --port {port} --backend-url {backend_url}"\n'


def error(tmp_path: Path, text: str) -> ScenarioError:
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    assert str(tmp_path / "s.toml") in str(ei.value)
    return ei.value


def test_command_target_loads_with_defaults(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(
        f'[target]\nkind = "command"\n{CMD}processes = 2\nenv = {{ MY_PORT = "{{port}}", MODE = "x" }}\n'
        f'cwd = "{tmp_path}"\nhealth_path = "/healthz"\n'
    )
    sc = load_scenario(p)
    t = sc.target
    assert t.kind == "command" and t.processes == 2 and t.process_control
    assert t.cmd == ("{python}", "-m", "their_server", "--port", "{port}", "--backend-url", "{backend_url}")
    assert dict(t.env) == {"MY_PORT": "{port}", "MODE": "x"}
    assert t.cwd == str(tmp_path) and t.health_path == "/healthz" and t.startup_timeout_s == 30.0
    plain = sc.to_plain()["target"]
    assert plain["process_control"] is True and plain["faults_applied"] is True


def test_command_as_a_list_keeps_spaces_inside_arguments(tmp_path: Path) -> None:
    (tmp_path / "my server").write_text("")
    p = tmp_path / "s.toml"
    p.write_text(
        f'[target]\nkind = "command"\ncwd = "{tmp_path}"\n'
        'cmd = ["./my server", "--port", "{port}", "--json", \'{"a": 1}\']\n'
    )
    assert load_scenario(p).target.cmd == ("./my server", "--port", "{port}", "--json", '{"a": 1}')


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('kind = "command"\n', "target.cmd", "{port}"),
        ('kind = "command"\ncmd = ""\n', "target.cmd", "empty"),
        ('kind = "command"\ncmd = "srv --port 8000"\n', "target.cmd", "put {port} in cmd"),
        ('kind = "command"\ncmd = "no-such-server-xyz --port {port}"\n', "target.cmd", "not on PATH"),
        ('kind = "command"\ncmd = "./no/such/server --port {port}"\n', "target.cmd", "does not exist"),
        ('kind = "command"\ncmd = "srv --port \'{port}"\n', "target.cmd", "quotes"),
        ('kind = "command"\ncmd = 3\n', "target.cmd", "string or a list"),
        ('kind = "command"\ncmd = "srv --port {prot}"\n', "target.cmd", "did you mean '{port}'"),
        ('kind = "command"\n' + CMD + 'env = { X = "{bakend_url}" }\n', "target.env.X", "did you mean"),
        ('kind = "command"\n' + CMD + "env = { X = 1 }\n", "target.env.X", "expected a string"),
        ('kind = "command"\n' + CMD + 'cwd = "/no/such/dir/here"\n', "target.cwd", "not a directory"),
        ('kind = "command"\n' + CMD + 'health_path = "health"\n', "target.health_path", "starting with '/'"),
        ('kind = "command"\n' + CMD + 'compare = ["default", "lock_restore"]\n', "target.compare", "reference"),
        ('kind = "command"\n' + CMD + 'server_args = ["--x"]\n', "target.server_args", "allowed here"),
        ('kind = "command"\n' + CMD + "processes = 0\n", "target.processes", ">= 1"),
        ('kind = "comand"\n', "target.kind", "did you mean 'command'"),
        ('kind = "urls"\nurls = ["http://127.0.0.1:1"]\nbackend_url = "127.0.0.1:2"\n', "target.backend_url", "URL"),
    ],
)
def test_bad_command_targets_name_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    e = error(tmp_path, "[target]\n" + text)
    assert e.key == key
    assert fix in e.message


def test_command_target_bounds_process_chaos_by_its_processes(tmp_path: Path) -> None:
    e = error(tmp_path, '[target]\nkind = "command"\n' + CMD + "[[chaos.kill_restart]]\nprocess = 1\nat_s = 1\n")
    assert e.key == "chaos.kill_restart[0].process"


def test_placeholders_fill_known_names_only() -> None:
    values = {p: p.upper() for p in COMMAND_PLACEHOLDERS}
    assert fill_placeholders("--port={port} {index}", values) == "--port=PORT INDEX"
    assert fill_placeholders('{"a": {port}}', values) == '{"a": PORT}'
    assert fill_placeholders("{not_ours} {}", values) == "{not_ours} {}"


def test_shipped_example_is_a_command_target() -> None:
    sc = load_scenario(Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "your_server.toml")
    assert sc.target.kind == "command" and "{port}" in sc.target.cmd and sc.chaos.kill_restart


def test_replay_line_reproduces_the_target_not_its_ports() -> None:
    from harness.runner import RunResult

    ours = RunResult("s", "lock_restore", 3, Path("o/s"), source="s.toml")
    assert ours.replay == "harness run s.toml --seed 3 --variant lock_restore"
    theirs = RunResult("s", "default", 3, Path("o/s"), source="s.toml", target_kind="command")
    assert theirs.replay == "harness run s.toml --seed 3"
    cli = RunResult("s", "default", 3, Path("o/s"), source="s.toml", target_args=["--server-cmd", "srv --port {port}"])
    assert cli.replay == "harness run s.toml --seed 3 --server-cmd 'srv --port {port}'"


def test_command_group_fills_each_process_placeholders(tmp_path: Path) -> None:
    import sys

    from harness.runner._procs import ProcessGroup
    from harness.tokenizer import resolve_tokenizer

    cmd = ("{python}", "-m", "srv", "--port={port}", "--tok", "{tokenizer}", "--log", "{log_file}", "--i", "{index}")
    group = ProcessGroup.command(
        tmp_path,
        cmd=cmd,
        processes=2,
        seed=1,
        plan_file=tmp_path / "plan.json",
        tokenizer="reasoning",
        env={"SRV_BACKEND": "{backend_url}", "SRV_HOST": "{host}"},
        health_path="/healthz",
    )
    assert group.backend is not None and len(group.servers) == 2
    ports = set()
    for i, s in enumerate(group.servers):
        port = s.url.rsplit(":", 1)[1]
        ports.add(port)
        assert s.argv[:4] == [sys.executable, "-m", "srv", f"--port={port}"]
        assert s.argv[5] == str(resolve_tokenizer("reasoning").resolve())
        assert s.argv[7] == str((tmp_path / "server-logs" / f"server-{i}.file.log").resolve())
        assert s.argv[9] == str(i)
        assert s.env is not None and s.env["SRV_BACKEND"] == group.backend.url and s.env["SRV_HOST"] == "127.0.0.1"
        assert s.capture == tmp_path / "server-logs" / f"server-{i}.log" and s.health_path == "/healthz"
    assert len(ports) == 2 and group.backend.url.rsplit(":", 1)[1] not in ports
    assert "--tokenizer" in group.backend.argv and "reasoning" in group.backend.argv  # the fake uses the same one


def test_a_relative_tokenizer_folder_is_found_beside_the_scenario_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from harness.tokenizer import DATA_ROOT

    lib = tmp_path / "lib"
    shutil.copytree(DATA_ROOT / "chatml", lib / "toks" / "mine")
    (lib / "own.toml").write_text('name = "own"\n[target]\ntokenizer = "toks/mine"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory has no toks/: the scenario's folder is what counts
    sc = load_scenario(lib / "own.toml")
    assert sc.target.tokenizer == str((lib / "toks" / "mine").resolve())
    (elsewhere / "toks").mkdir()  # a folder of the same name in the working directory does not win
    assert load_scenario(lib / "own.toml").target.tokenizer == str((lib / "toks" / "mine").resolve())
    (lib / "cwd.toml").write_text('name = "cwd"\n[target]\ntokenizer = "cwdtok"\n')
    shutil.copytree(DATA_ROOT / "chatml", elsewhere / "cwdtok")  # not beside the file: the working directory's
    assert load_scenario(lib / "cwd.toml").target.tokenizer == "cwdtok"
