"""What a pip install carries: every package of the tree, the shipped configs, the claims' experiments."""

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_tree():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "gradflow").rglob("__init__.py")
    }
    mapped = {"gradflow.configs": "configs", "gradflow.experiments": "experiments"}
    assert tool["package-dir"] == mapped
    assert listed == found | set(mapped)
    assert (ROOT / "experiments" / "__init__.py").is_file()
    assert tool["package-data"]["gradflow.configs"] == ["*.yaml"]


def test_shipped_configs_resolve_by_name_and_by_path(tmp_path, monkeypatch):
    from gradflow import config as cfgmod

    shipped = cfgmod.shipped_configs()
    assert set(shipped) == {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    monkeypatch.chdir(tmp_path)  # away from the checkout: names still resolve
    assert cfgmod.resolve_config("compare_cells") == shipped["compare_cells"]
    assert cfgmod.resolve_config("compare_cells.yaml") == shipped["compare_cells"]
    assert cfgmod.resolve_config("configs/compare_cells.yaml") == shipped["compare_cells"]
    mine = tmp_path / "compare_cells.yaml"  # a file of the user's wins over the shipped name
    mine.write_text("name: mine\n")
    assert cfgmod.resolve_config("compare_cells.yaml") == pathlib.Path("compare_cells.yaml")
    try:
        cfgmod.resolve_config("compare_cell")
    except cfgmod.ConfigError as err:
        assert str(err).startswith("compare_cell: no such file, and not a shipped config (shipped: adding,")
        assert "\n" not in str(err)
    else:
        raise AssertionError("an unknown name was accepted")


def test_import_gradflow_is_cheap_and_every_public_name_resolves():
    """``import gradflow`` loads no JAX, matplotlib, optax or yaml; each public name imports on use."""
    import subprocess
    import sys

    code = (
        "import sys, gradflow\n"
        "heavy = [m for m in ('jax', 'matplotlib', 'optax', 'yaml', 'flax', 'rich') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "for name in gradflow.__all__:\n"
        "    assert getattr(gradflow, name) is not None, name\n"
        "from gradflow import Cell, cells, gradient_flow\n"
        "assert Cell is gradflow.seam.Cell and gradient_flow is gradflow.measure.gradient_flow\n"
        "assert cells.get is gradflow.cells.get\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    import gradflow

    try:
        gradflow.no_such_name
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("an unknown attribute resolved")
