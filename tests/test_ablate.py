"""`cspdet ablate`: every variant trained with the same budget and seeds, one table with every
column, a failing variant reported as a row while the others go on, sets kept as data."""
import copy
from pathlib import Path

import pytest
import yaml

from detector.ablation import load_sets, run_config
from detector.cli import ablate
from detector.config import ConfigError, apply_overrides

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["variant", "params (M)", "GFLOPs", "ORT ms", "peak act. (MB)", "FPN peak (MB)",
           "FPN out (MB)", "FPN vs first", "AP", "AP50", "AP75", "AP per seed", "AP spread", "ΔAP vs ref",
           "ΔAP50 vs ref", "separates (AP / AP50)", "train s / run"]
TINY_BUDGET = {"train.epochs": 1, "train.batch_size": 4, "train.img_size": 64, "train.workers": 1,
               "train.plots": False, "train.tensorboard": False, "train.warmup_min_iters": 1,
               "train.close_mosaic": 0, "eval.img_size": 64, "eval.interval": 0, "eval.max_det": 30}


def _tiny_sets(tmp_path, variants):
    """The real ablations file with a tiny budget (one step a run) and the given variants."""
    sets = yaml.safe_load((REPO / "configs" / "ablations" / "paper.yaml").read_text())
    sets["budgets"]["tiny"] = {"seeds": [0, 1], "set": {
        "data.generate.num_train": 4, "data.generate.num_val": 2, "data.generate.img_size": 64, **TINY_BUDGET}}
    sets["budgets"]["tiny-photos"] = {"seeds": [0, 1], "set": TINY_BUDGET}  # data: --data
    sets["sets"]["tiny"] = {"title": "tiny", "variants": variants}
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(sets))
    return path


def test_a_tiny_set_writes_the_table_with_every_column(tmp_path, monkeypatch):
    monkeypatch.setenv("CSPDET_CACHE_DIR", str(tmp_path / "cache"))
    sets_file = _tiny_sets(tmp_path, [
        {"name": "maxout on", "set": {"model.neck.maxout": True}},
        {"name": "maxout off", "set": {"model.neck.maxout": False}},
        {"name": "typo", "set": {"model.neck.maxuot": False}}])
    out = tmp_path / "table.md"
    rc = ablate.main(["tiny", "--sets-file", str(sets_file), "--budget", "tiny",
                      "--save-dir", str(tmp_path / "runs"), "--output", str(out),
                      "--ort-iters", "2", "--no-progress"])
    assert rc == 0
    text = out.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| maxout") or line.startswith("| typo")}
    for name in ("maxout on", "maxout off"):
        cells = rows[name]
        assert len(cells) == len(COLUMNS)
        assert all(c not in ("", "-") for c in cells), cells
        assert "±" in cells[8] and len(cells[11].split(",")) == 2  # two seeds
        assert "-" in cells[12]  # AP spread: min-max over the seeds
        assert float(cells[3]) > 0  # ORT ms
    # Maxout halves the fused maps: the pyramid without it is larger
    assert float(rows["maxout off"][6]) > float(rows["maxout on"][6])
    assert rows["maxout on"][7] == "1.00x"
    assert rows["maxout on"][13:16] == ["ref", "ref", "ref"]
    assert rows["maxout off"][13][0] in "+-" and rows["maxout off"][15] in {f"{a} / {b}" for a in ("yes", "no")
                                                                            for b in ("yes", "no")}
    assert "failed" in rows["typo"][1] and "maxuot" in rows["typo"][1]
    assert "saved by `maxout on`" in text and "Budget `tiny`" in text and "torch" in text
    # every run used the same data and seeds 0 and 1, each in its own folder
    runs = sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir() if p.is_dir())
    assert runs == ["maxout_off-s0", "maxout_off-s1", "maxout_on-s0", "maxout_on-s1"]
    cfgs = [yaml.safe_load((tmp_path / "runs" / "tiny" / r / "config.yaml").read_text()) for r in runs]
    assert {c["train"]["seed"] for c in cfgs} == {0, 1}
    assert len({yaml.safe_dump(c["data"]) for c in cfgs}) == 1


def test_every_set_of_the_file_builds_a_config_per_variant(tmp_path):
    sets = load_sets()
    assert {"neck", "refine", "maxout", "gamma", "fusion", "activation", "head"} <= set(sets["sets"])
    budget = sets["budgets"]["quick"]
    seen = {}
    for name, aset in sets["sets"].items():
        for v in aset.variants:
            cfg = run_config(sets, v, budget, 1, ["train.epochs=2"], tmp_path, "r")
            assert cfg["train"]["seed"] == 1 and cfg["train"]["epochs"] == 2
            assert cfg["data"]["generate"]["kind"] == "proxy"
            seen[(name, v.name)] = cfg
    assert seen[("neck", "PANet")]["model"]["neck"]["type"] == "panet"
    assert "maxout" not in seen[("neck", "PANet")]["model"]["neck"]  # replaced, not merged
    assert [s["fusion"] for s in seen[("fusion", "fusion first")]["model"]["backbone"]["stages"]] == ["first"] * 4
    assert seen[("gamma", "gamma 0.25")]["model"]["backbone"]["stage_defaults"]["split_ratio"] == 0.25
    assert seen[("activation", "Swish")]["model"]["head"]["act"] == "swish"
    assert seen[("activation", "ReLU")]["model"]["neck"]["act"] == "relu"  # the flagship as it is
    assert seen[("activation", "LReLU")]["model"]["neck"]["act"]["name"] == "leaky_relu"


def test_dotted_keys_of_the_file_and_clear_errors(capsys):
    """Variant keys go through the project's one override mechanism, with the file's rules:
    ``*`` and list indices, missing sections created, bad paths named."""
    cfg = {"a": {"b": 1, "l": [{"x": 1}, {"x": 2}]}}
    c = copy.deepcopy(cfg)
    apply_overrides(c, {"a.l.*.x": 5, "a.l.0.y": 1, "a.new.k": 2}, new_sections=True)
    assert c == {"a": {"b": 1, "l": [{"x": 5, "y": 1}, {"x": 5}], "new": {"k": 2}}}
    with pytest.raises(ConfigError, match="'a.b' is a value"):
        apply_overrides(c, {"a.b.c": 1}, new_sections=True)
    with pytest.raises(ConfigError, match="'9' is not an index of the list at 'a.l'"):
        apply_overrides(c, {"a.l.9.x": 1}, new_sections=True)
    with pytest.raises(ConfigError, match="cannot be the last part"):
        apply_overrides(c, {"a.l.*": 1}, new_sections=True)
    with pytest.raises(ConfigError, match="no section 'a.other'"):  # the command line's rule
        apply_overrides(c, {"a.other.k": 2})
    value = {"deep": [1]}
    apply_overrides(c, {"a.l.*.v": value}, new_sections=True)
    value["deep"].append(2)
    assert c["a"]["l"][0]["v"] == c["a"]["l"][1]["v"] == {"deep": [1]}  # copies, not the file's object
    assert ablate.main(["no-such-set"]) == 2
    assert "unknown set" in capsys.readouterr().err
    assert ablate.main(["maxout", "--variants", "nope"]) == 2
    assert ablate.main(["--list"]) == 0


def test_separates_compares_the_difference_with_the_seed_spread():
    from detector.ablation.table import delta, separates, spread

    assert separates([0.30, 0.32], [0.20, 0.25]) == "yes"      # every seed above every seed
    assert separates([0.30, 0.32], [0.20, 0.31]) == "no"       # the ranges overlap
    assert separates([0.10, 0.12], [0.20, 0.25]) == "yes"      # below counts too
    assert separates([0.30], [0.20, 0.25]) == "n/a"            # one seed: no spread to compare
    assert delta([0.30, 0.32], [0.20, 0.24]) == "+0.0900" and spread([0.3, 0.1, 0.2]) == "0.1000-0.3000"


def test_real_photo_budgets_train_the_required_sets_on_bccd(tmp_path):
    """``--budget bccd`` (CPU) and ``bccd-gpu`` train on configs/data/bccd.yaml; ``csp`` (also
    called ``backbone``) is the flagship against its plain twin."""
    from detector.ablation import pick_set

    sets = load_sets()
    assert pick_set(sets, "backbone") is pick_set(sets, "csp")
    csp = {v.name: run_config(sets, v, sets["budgets"]["bccd"], 0, [], tmp_path, "r")
           for v in pick_set(sets, "csp").variants}
    assert csp["CSP"]["model"]["backbone"]["name"] != csp["plain"]["model"]["backbone"]["name"]
    for budget in ("bccd", "bccd-gpu"):
        b = sets["budgets"][budget]
        assert len(b["seeds"]) >= 2
        for name in ("backbone", "neck", "refine", "maxout", "gamma"):
            for v in pick_set(sets, name).variants:
                cfg = run_config(sets, v, b, 0, [], tmp_path, "r")
                assert cfg["data"]["format"] == "voc" and cfg["data"]["_source"].endswith("bccd.yaml")
                assert "test" in cfg["data"] and cfg["train"]["img_size"] == b["set"]["train.img_size"]


@pytest.mark.slow
def test_csp_set_on_real_photos_gives_mean_spread_and_separates(tmp_path, monkeypatch, tiny_bccd):
    """The paper's named comparison on a few BCCD photos (1 epoch, 64 px, 2 seeds), through the
    ``backbone`` alias and ``--data``: every variant's AP spread, its difference to the
    reference and whether it separates."""
    monkeypatch.setenv("CSPDET_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "photos.yaml"
    data.write_text(yaml.safe_dump(tiny_bccd))
    out = tmp_path / "table.md"
    rc = ablate.main(["backbone", "--sets-file", str(_tiny_sets(tmp_path, [{"name": "x"}])),
                      "--budget", "tiny-photos", "--data", str(data), "--save-dir", str(tmp_path / "runs"),
                      "--output", str(out), "--ort-iters", "2", "--no-progress"])
    assert rc == 0
    text = out.read_text()
    assert f"data={data}" in text and "photos.yaml" in text
    rows = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in text.splitlines()
                              if line.startswith("| CSP") or line.startswith("| plain"))}
    assert set(rows) == {"CSP", "plain"} and all(len(c) == len(COLUMNS) for c in rows.values())
    assert rows["CSP"][15] == "ref" and rows["plain"][15] in ("yes / yes", "yes / no", "no / yes", "no / no")
    assert all("-" in c[12] and len(c[11].split(",")) == 2 for c in rows.values())
    assert "`plain` vs `CSP`: ΔAP" in text
