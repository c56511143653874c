from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from endosec.quantify.cli import quantify
from endosec.quantify.markov import mttsf

CONFIG = """
executors:
  - name: nginx
    argv: [nginx, "{port}"]
    profile: ["os:debian12", "server:nginx-1.22", "lang:python3.11"]
  - name: httpd
    argv: [httpd, "{port}"]
    profile: ["os:debian12", "server:httpd-2.4", "lang:go1.21"]
  - name: lighttpd
    argv: [lighttpd, "{port}"]
    profile: ["os:alpine3.19", "server:lighttpd-1.4", "lang:python3.11"]
quantify:
  components: {"os:debian12": 0.05}
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(quantify, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> dict[str, object]:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "endosec.yaml"
    path.write_text(CONFIG)
    return path


def test_vote() -> None:
    assert run_json("vote", "--n", "3", "--p", "0.1")["p_defeat"] == pytest.approx(0.028)
    beta = run_json("vote", "--n", "3", "--p", "0.1", "--beta", "0.5")
    assert beta["model"] == "beta-factor" and beta["p_defeat"] > 0.028
    assert run_json("vote", "--n", "5", "--k", "2", "--p", "0.1", "--rho", "0.3")["k"] == 2
    code, out, _ = run("vote", "--n", "3", "--p", "0.1")
    assert code == 0 and "p_defeat" in out and "0.028" in out


def test_markov() -> None:
    r = run_json("markov", "--n", "3", "--lam", "1", "--mu", "2", "--t", "1")
    assert r["mttsf"] == pytest.approx(7 / 6)
    assert 0 < r["p_defeat_by_t"] < 1  # type: ignore[operator]
    seq = run_json("markov", "--n", "3", "--lam", "1", "--mu", "2", "--sequential")
    assert seq["mttsf"] == pytest.approx(mttsf(3, 2, 1, 2, sequential=True))
    assert "p_defeat_by_t" not in seq


def test_components(config: Path) -> None:
    r = run_json("components", "--config", str(config))
    assert r["method"] == "exact" and "ci" not in r and r["n"] == 3
    contributions = r["contributions"]
    assert isinstance(contributions, list)
    assert contributions[0]["component"] == "os:debian12"
    mc = run_json("components", "--config", str(config), "--method", "monte-carlo", "--seed", "1",
                  "--trials", "20000", "--component", "os:debian12=0.05")
    assert mc["method"] == "monte-carlo" and len(mc["ci"]) == 2  # type: ignore[arg-type]
    lower = run_json("components", "--config", str(config), "--p-default", "0.001",
                     "--component", "os:debian12=0")
    assert lower["p_defeat"] < r["p_defeat"]  # type: ignore[operator]
    sub = run_json("components", "--config", str(config), "--executors", "nginx,lighttpd")
    assert sub["executors"] == ["nginx", "lighttpd"] and sub["k"] == 2
    code, out, _ = run("components", "--config", str(config))
    assert code == 0 and "os:debian12" in out and "largest risk first" in out


def test_simulate() -> None:
    r = run_json("simulate", "--n", "3", "--lam", "1", "--mu", "2", "--trials", "5000",
                 "--seed", "1", "--t", "1")
    assert r["engine"] == "vectorised" and len(r["ci"]) == 2  # type: ignore[arg-type]
    low, high = r["ci"]  # type: ignore[misc]
    width = high - low
    assert low - width < 7 / 6 < high + width
    assert "p_defeat_by_t" in r
    f = run_json("simulate", "--n", "3", "--lam", "1", "--mu", "1", "--engine", "faithful",
                 "--policy", "round-robin", "--rotate", "1", "--trials", "40", "--seed", "2",
                 "--attacker", "shared-component")
    assert f["engine"] == "faithful" and f["policy"] == "round-robin"


def test_simulate_takes_the_pool_from_a_config(config: Path) -> None:
    r = run_json("simulate", "--config", str(config), "--n", "3", "--lam", "1", "--mu", "1",
                 "--attacker", "shared-component", "--trials", "500", "--seed", "3")
    assert r["attacker"] == "shared-component" and r["mttsf"] > 0  # type: ignore[operator]
    # the red team's threat-aware incremental phase, as docs/redteam.md gives it
    aware = run_json("simulate", "--config", str(config), "--n", "3", "--lam", "0.5",
                     "--rotate", "1", "--rotate-min", "0.4", "--dissent", "2",
                     "--threat-half-life", "2", "--threat-scale", "1",
                     "--quarantine-after", "1000000", "--no-isolation",
                     "--attacker", "sequential", "--engine", "faithful", "--trials", "200",
                     "--seed", "1", "--t", "4")
    assert 0 < aware["p_defeat_by_t"] < 1 and aware["rotate_min"] == 0.4  # type: ignore[operator]


@pytest.mark.parametrize("args", [
    ["vote", "--n", "3", "--p", "1.5"],
    ["vote", "--n", "3", "--k", "4", "--p", "0.1"],
    ["markov", "--n", "3", "--lam", "-1", "--mu", "1"],
    ["markov", "--n", "3", "--lam", "1", "--mu", "-2"],
    ["simulate", "--n", "3", "--lam", "1", "--mu", "-1"],
    ["simulate", "--n", "3", "--lam", "1", "--policy", "max-dissimilarity"],
    ["simulate", "--n", "3", "--lam", "1", "--trials", "1"],
    ["components", "--config", "/nonexistent/endosec.yaml"],
    ["components", "--config", "CONFIG", "--component", "os:debian12"],
    ["components", "--config", "CONFIG", "--k", "9"],
    ["vote", "--n", "3", "--p", "0.1", "--plot", "x.png"],
    ["vote", "--n", "3", "--p", "0.1", "--sweep", "q=0:1:3"],
    ["vote", "--n", "3", "--p", "0.1", "--sweep", "p=0:1"],
])
def test_bad_parameters_give_one_line_and_status_2(args: list[str], config: Path) -> None:
    args = [str(config) if a == "CONFIG" else a for a in args]
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    assert err.startswith("Error: ") and err.count("\n") == 1


def test_sweep_prints_a_table_and_draws_a_plot(tmp_path: Path) -> None:
    png = tmp_path / "curve.png"
    code, out, err = run("vote", "--n", "5", "--p", "0.1", "--sweep", "p=0:0.5:6",
                         "--plot", str(png))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["p", "p_defeat"] and len(lines) == 2 + 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_json("markov", "--n", "3", "--lam", "1", "--mu", "1", "--sweep", "mu=0:4:3")
    assert r["sweep"] == "mu" and [p["mu"] for p in r["points"]] == [0.0, 2.0, 4.0]  # type: ignore
    assert r["points"][0]["mttsf"] == pytest.approx(mttsf(3, 2, 1, 0))  # type: ignore[index]
    n_sweep = run_json("vote", "--n", "3", "--p", "0.1", "--sweep", "n=3:7:3")
    assert [p["n"] for p in n_sweep["points"]] == [3, 5, 7]  # type: ignore[union-attr]


def test_simulate_sweep_plots_with_intervals(tmp_path: Path) -> None:
    png = tmp_path / "sim.png"
    code, out, err = run("simulate", "--n", "3", "--lam", "1", "--trials", "2000", "--seed", "1",
                         "--t", "1", "--sweep", "mu=0:2:3", "--plot", str(png))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["mu", "mttsf", "p_defeat_by_t"]
    assert png.stat().st_size > 1000


def test_module_runs_as_a_program() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "endosec.quantify.cli", "markov", "--n", "3", "--lam", "1",
         "--mu", "2", "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mttsf"] == pytest.approx(7 / 6)
    bad = subprocess.run(
        [sys.executable, "-m", "endosec.quantify.cli", "vote", "--n", "3", "--p", "2"],
        capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
