"""The benchmark harness (a --quick smoke run) and the demo (--quick, checking that its
numbers make sense), through their command-line entry points."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from deepoptim import bench, demo


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepoptim", *args], capture_output=True, text=True, cwd=cwd)


# ------------------------------------------------------------------------ bench
def test_quick_bench_writes_table_json_and_plot(tmp_path, capsys):
    j, p = tmp_path / "r.json", tmp_path / "r.png"
    assert bench.main(["--quick", "--filter", "adam/100K|overhead|dropout", "--repeats", "2", "--threads", "2",
                       "--json", str(j), "--plot", str(p), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "of probe" in out and "adam/100K" in out and "dropout/100K" in out
    data = json.loads(j.read_text())
    assert data["machine"]["deepoptim"]["isa"] and data["config"]["quick"] is True
    rows = data["results"]
    cases = {r["case"] for r in rows}
    assert cases == {"adam/100K", "overhead/adam-1K-call", "dropout/100K"}
    for case in cases:
        impls = {r["impl"]: r for r in rows if r["case"] == case}
        assert {"deepoptim", "probe"} <= set(impls)
        probe = impls["probe"]["median_s"]
        for r in impls.values():
            assert r["median_s"] > 0 and r["min_s"] <= r["median_s"] and r["gbps"] > 0
            # The reported figures are the measured ones: GB/s from the bytes and the
            # median, the probe ratio from the two medians.
            assert r["gbps"] == pytest.approx(r["bytes_per_elem"] * r["size"] / r["median_s"] / 1e9)
            if r["of_probe"] is not None:
                assert r["of_probe"] == pytest.approx(probe / r["median_s"])
    assert p.stat().st_size > 10_000
    # --replot measures nothing: the stored run's table again, and its chart.
    p2 = tmp_path / "again.png"
    assert bench.main(["--replot", str(j), "--plot", str(p2)]) == 0
    again = capsys.readouterr().out
    assert again.split("chart:")[0].strip() == bench.table(rows).strip()
    assert p2.stat().st_size > 10_000


def test_replot_refuses_what_is_not_a_results_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for path in (bad, tmp_path / "missing.json"):
        r = _cli("bench", "--replot", str(path))
        assert r.returncode == 2 and "--replot" in r.stderr and str(path) in r.stderr


def test_bench_suite_checks_every_kernel_before_timing():
    # setup() compares deepoptim with its twin and raises on a mismatch: run them all
    for case in bench.suite(quick=True):
        impls = case.setup()
        assert "deepoptim" in impls and "probe" in impls


def test_bench_cli_errors(tmp_path):
    r = _cli("bench", "--filter", "no-such-case")
    assert r.returncode == 2 and "matches no case" in r.stderr
    r = _cli("bench", "--threads", "0")
    assert r.returncode == 2 and "--threads" in r.stderr
    r = _cli("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = _cli("--help")
    assert r.returncode == 0 and "bench" in r.stdout and "demo" in r.stdout


# ------------------------------------------------------------------------ demo
@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = _cli("demo", "--quick", "--quiet", "--seed", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r.stdout, json.loads((out / "summary.json").read_text())


def test_demo_writes_every_image_and_the_report(quick_demo):
    out, stdout, summary = quick_demo
    images = ["linear_loss.png", "schedules.png", "gradients.png", "mlp_accuracy.png", "precision.png"]
    for name in images:
        assert (out / name).stat().st_size > 20_000, name
    report = (out / "report.md").read_text()
    assert all(f"({name})" in report for name in images)
    assert "summary" in stdout and str(out) in stdout
    assert summary["quick"] is True and summary["seconds"] < 20


def test_demo_numbers_are_sane(quick_demo):
    _, _, s = quick_demo
    ex = s["experiments"]
    for kind in ("2x", "3x+2"):
        adam = ex["linear"][kind]["methods"]["Adam"]
        assert adam["loss_over_optimum"] < 1.01, adam  # within 1% of least squares
        ls = ex["linear"][kind]["least_squares"]
        assert abs(adam["slope"] - ls["slope"]) < 0.1
    g = ex["gradients"]["configs"]
    # vanishing gradients: the sigmoid net's first layer gets orders of magnitude less
    assert g["sigmoid"]["first_layer_grad_norm_at_init"] < 1e-6 * g["ReLU + BatchNorm"]["first_layer_grad_norm_at_init"]
    # exploding gradients: without clipping the run diverges, with clipping it does not
    assert g["ReLU, 1.5x He init (exploding)"]["diverged"] and not g["same + clip norm 1"]["diverged"]
    for name, r in ex["mlp"]["optimizers"].items():
        assert r["val_accuracy"] > 0.85, (name, r)  # chance is 1/3
    assert ex["schedules"]["schedules"]["restart on loss threshold"]["restarts"] >= 1
    pr = ex["precision"]["modes"]  # bounds: tests/test_precision_demo.py
    assert pr["bfloat16 params, nearest"]["loss_over_float32"] > pr["bfloat16 params, stochastic rounding"][
        "loss_over_float32"]
    # Each configuration has its own stream from the seed: the clipped run measures the
    # same initial gradients as the run it clips (same weights, same first batch).
    same, clipped = g["ReLU, 1.5x He init (exploding)"], g["same + clip norm 1"]
    assert clipped["first_layer_grad_norm_at_init"] == same["first_layer_grad_norm_at_init"]
    assert clipped["last_layer_grad_norm_at_init"] == same["last_layer_grad_norm_at_init"]
    assert same["diverged_at_step"] >= 1


def test_demo_report_has_the_schedules_numbers_and_names_its_sources(quick_demo):
    out, _, s = quick_demo
    report = (out / "report.md").read_text()
    section = report[report.index("## Learning-rate schedules"):report.index("## Vanishing")]
    for name, r in s["experiments"]["schedules"]["schedules"].items():
        assert f"| {name}" in section and f"| {r['loss_over_optimum']:.4f} | {r['excess_mse_tail']:.2e} |" in section
    for reference in ("Kingma & Ba, 2015", "Loshchilov & Hutter, 2017", "Ioffe & Szegedy, 2015",
                      "Pascanu, Mikolov & Bengio, 2013", "He et al., 2015"):
        assert reference in report
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    for text in (report, readme, demo.__doc__):
        assert "source document" not in text and not re.search(r"seeds? \d{3}", text)


def test_demo_is_deterministic_given_the_seed(tmp_path):
    a = demo.run(["linear"], str(tmp_path / "a"), quick=True, seed=3, quiet=True)
    b = demo.run(["linear"], str(tmp_path / "b"), quick=True, seed=3, quiet=True)
    assert a["experiments"] == b["experiments"]


def test_demo_refuses_bad_arguments(tmp_path):
    r = _cli("demo", "nonsense")
    assert r.returncode == 2 and "unknown experiment 'nonsense'" in r.stderr and "Traceback" not in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _cli("demo", "linear", "--quick", "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "cannot create --out" in r.stderr and "Traceback" not in r.stderr
    r = _cli("demo", "linear", "--quick", "--out", str(blocker))
    assert r.returncode == 2 and "not a folder" in r.stderr


def test_demo_without_its_extras_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes 'import matplotlib' fail
    assert demo.main(["linear", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'pip install "deepoptim[demo]"' in err and "matplotlib" in err


def test_digits_dataset_without_scikit_learn_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert demo.main(["mlp", "--quick", "--quiet", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    assert "--dataset digits needs scikit-learn: pip install scikit-learn" in capsys.readouterr().err


def test_digits_without_scikit_learn_fails_before_any_experiment(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    ran = []
    for name in ("exp_linear", "exp_schedules", "exp_gradients", "exp_mlp"):
        monkeypatch.setattr(demo, name, lambda *a, _n=name, **k: ran.append(_n) or {"images": []})
    out = tmp_path / "out"
    assert demo.main(["--quick", "--quiet", "--dataset", "digits", "--out", str(out)]) == 2  # all experiments
    assert ran == [] and not out.exists()
    assert "needs scikit-learn" in capsys.readouterr().err
    with pytest.raises(demo.DemoError, match="scikit-learn"):
        demo.run(["linear", "mlp"], str(out), quick=True, seed=0, quiet=True, dataset="digits")
    assert ran == []


@pytest.mark.parametrize("seed,message", [("-1", "must be in [0, 4294967295], got -1"),
                                          ("4294967296", "must be in [0, 4294967295]"),
                                          ("abc", "expected an integer, got 'abc'")])
def test_demo_bad_seed_is_a_clean_error(tmp_path, seed, message):
    r = _cli("demo", "linear", "--quick", "--seed", seed, "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and f"argument --seed: {message}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
    with pytest.raises(demo.DemoError, match="seed"):
        demo.run(["linear"], str(tmp_path / "out"), quick=True, seed=int(seed) if seed != "abc" else -1, quiet=True)
