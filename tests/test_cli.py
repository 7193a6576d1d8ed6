"""The newcomer's path through the training CLI: the config reference in sync with the config module,
the default workdir a rerun resumes, and honest progress (ETAs from the phase's own rate). The resume
of the same command is test_faults.py's SIGKILL test; the step counter across outputs is
test_evaluate.py's."""

import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from sepo_jax import cli, progress
from sepo_jax.config import LAMBDAS, default_config, key_help, settings

REPO = Path(__file__).parent.parent


def test_the_config_reference_in_docs_is_the_one_the_config_module_generates():
    committed = (REPO / "docs" / "config.md").read_text()
    assert committed == cli.config_reference(), \
        "docs/config.md is stale: run `python -m sepo_jax.train --helpconfig > docs/config.md`"


def test_every_config_key_is_documented_and_every_entry_is_a_key():
    def leaves(c, prefix=""):
        for k, v in c.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else [prefix + k]

    keys = {k for game in LAMBDAS for k in leaves(default_config(game))}
    assert sorted(keys - key_help().keys()) == [], "add these keys to sepo_jax.config.key_help"
    assert sorted(key_help().keys() - keys) == [], "these key_help entries name no config key"


def test_helpconfig_prints_the_reference_without_a_config():
    out = subprocess.run([sys.executable, "-m", "sepo_jax.train", "--helpconfig"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout == cli.config_reference()


def test_the_default_workdir_is_the_same_for_the_same_config_and_differs_for_another():
    kuhn = str(REPO / "configs" / "kuhn.py")
    c = cli._load_config_file(kuhn)
    assert cli.default_workdir(kuhn, c) == "runs/kuhn"
    c.log_every, c.checkpoint_every = 1, 7  # keys a resume may change: the same run, continued
    assert cli.default_workdir(kuhn, c) == "runs/kuhn"
    c.steps = 500  # its learning rate decays over the steps (cosine): another trajectory, another run
    assert cli.default_workdir(kuhn, c).startswith("runs/kuhn-")
    c.steps = 1000
    equilibrium = str(REPO / "configs" / "kuhn_equilibrium.py")
    constant = cli._load_config_file(equilibrium)
    constant.steps = 500  # a constant rate: more steps continue the same run
    assert cli.default_workdir(equilibrium, constant) == "runs/kuhn_equilibrium"
    c.sft.steps = 2
    smoke = cli.default_workdir(kuhn, c)
    assert smoke.startswith("runs/kuhn-") and smoke == cli.default_workdir(kuhn, c)
    c.sft.steps = 3
    assert cli.default_workdir(kuhn, c) not in ("runs/kuhn", smoke)
    ablation = str(REPO / "configs" / "ablation.py") + ":ipd,shared"
    assert cli.default_workdir(ablation, cli._load_config_file(ablation)) == "runs/ablation-ipd-shared"
    fresh = cli.default_workdir(kuhn, cli._load_config_file(kuhn), fresh=True)
    assert fresh.startswith("runs/kuhn-") and fresh[len("runs/kuhn-"):].replace("-", "").isdigit()


def test_the_summary_of_a_finished_run_says_where_its_results_are(tmp_path):
    last = {"step": 400, "payoff": 0.25, "exploit_pool_advantage": 0.0, "nash_conv": 0.0114, "kl": 0.01}
    lines = cli.run_summary("runs/kuhn", last).splitlines()
    assert lines[1:] == [
        f"final metrics (step 400, the last line of {Path('runs/kuhn/metrics.jsonl').absolute()}):",
        "  payoff=0.2500 exploit_pool_advantage=0.0000 nash_conv=0.0114",
        f"checkpoints: {Path('runs/kuhn/checkpoints').absolute()}",
        "evaluate:    python -m sepo_jax.evaluate --workdir=runs/kuhn",
        'TensorBoard: tensorboard --logdir runs/kuhn/tb  (the viewer: pip install -e ".[viz]")']
    assert "sft_metrics.jsonl" in cli.run_summary("runs/kuhn", {"step": 300, "sft_loss": 0.3})


def test_plain_progress_lines_time_each_phase_from_its_own_start(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    show = progress.Progress(tty=False)
    show.say("compiling the SEPO step...")
    now[0] += 90.0  # a compile: not part of any rate
    show.start("sepo", 300, 400)
    now[0] += 5.0
    show.advance(302, "payoff=0.1000")
    show.advance(303)  # no text: no line
    assert capsys.readouterr().out.splitlines() == [
        "compiling the SEPO step...", "[sepo] step 302/400 payoff=0.1000 | 2.5 s/step, eta 4m05s"]


@pytest.mark.parametrize("seconds,text", [(42.4, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_as_a_person_would_write_them(seconds, text):
    assert progress.duration(seconds) == text


def test_a_terminal_gets_a_tqdm_bar_counting_the_same_steps(capsys):
    show = progress.Progress(tty=True)
    show.start("sft", 0, 4)
    show.advance(2, "sft_loss=0.5000")
    show.say("a message above the bar")
    show.end()
    out = capsys.readouterr().out
    assert "sft:" in out and "2/4" in out and "sft_loss=0.5000" in out and "a message above the bar" in out


def test_a_cosine_run_resumes_only_with_its_own_number_of_steps():
    from sepo_jax.rl.loop import check_resume_config

    c = cli._load_config_file(str(REPO / "configs" / "kuhn.py"))
    saved = settings(c).to_json()
    c.steps, c.log_every = c.steps + 1, 1
    with pytest.raises(ValueError, match=r"steps: 1000 in the run, 1001 now.*steps not under grpo.lr_schedule=cosine"):
        check_resume_config(saved, settings(c), "runs/kuhn")
    c.steps = 1000
    check_resume_config(saved, settings(c), "runs/kuhn")  # log_every may change
    c.grpo.lr_schedule, c.steps = "constant", 1001
    constant = settings(c).replace(**{"steps": 1000}).to_json()
    check_resume_config(constant, settings(c), "runs/kuhn")  # a constant rate: more steps continue the run
