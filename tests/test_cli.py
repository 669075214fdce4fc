"""The train / evaluate command lines: bad input gives one clear message and exit status 2."""
import pytest

from hsnet_lite import evaluate as evaluate_cli
from hsnet_lite import train as train_cli
from hsnet_lite.config import TrainConfig
from hsnet_lite.datasets import DatasetNotFoundError
from hsnet_lite.trainer import train


def cli_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--benchmark", "nope"], "invalid choice: 'nope'"),
    (["--fold", "4"], "fold 4 is out of range for embedded: use 0..3"),
    (["--shot", "0"], "shot must be >= 1"),
    (["--benchmark", "pascal"], "needs --datapath"),
    (["--levels", "0", "3"], "levels must be a non-empty subset"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--lr", "-1"], "lr must be positive"),
    (["--img-size", "16"], "img_size must be at least 32"),
    (["--resume", "/no/such/last.pt"], "checkpoint not found: /no/such/last.pt"),
])
def test_train_cli_bad_input(argv, message, capsys, tmp_path):
    assert message in cli_error(train_cli.main, argv + ["--output", str(tmp_path)], capsys)


def test_missing_dataset_folder_message_passes_through(tmp_path, capsys):
    err = cli_error(train_cli.main, ["--benchmark", "pascal", "--datapath", str(tmp_path), "--output",
                                     str(tmp_path / "out")], capsys)
    assert "PASCAL-5i: expected data at" in err and "How to obtain it" in err
    with pytest.raises(DatasetNotFoundError, match="COCO-20i"):
        train(TrainConfig(benchmark="coco", datapath=str(tmp_path), output=str(tmp_path / "out")))


@pytest.mark.parametrize("argv, message", [
    ([], "needs exactly one of --checkpoint"),
    (["--checkpoint", "a.pt", "--pretrained"], "needs exactly one of"),
    (["--official-checkpoint", "/no/best_model.pt"], "official checkpoint not found"),
    (["--method", "baseline", "--episodes", "0"], "episodes must be >= 1"),
    (["--pretrained", "--benchmark", "fss", "--datapath", "x"], "--pretrained is the model trained on the embedded"),
    (["--method", "baseline", "--fold", "-1"], "fold -1 is out of range"),
])
def test_evaluate_cli_bad_input(argv, message, capsys):
    assert message in cli_error(evaluate_cli.main, argv, capsys)


def test_evaluate_cli_prints_metrics(capsys):
    evaluate_cli.main(["--method", "baseline", "--img-size", "64", "--episodes", "3", "--no-progress"])
    out = capsys.readouterr().out
    assert "baseline on embedded fold 0 (test, 1-shot, 3 episodes): mIoU" in out and "FB-IoU" in out
