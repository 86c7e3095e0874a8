"""The PyTorch bridge; runs where PyTorch is installed (it is not in CI)."""

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fairgrid  # noqa: E402
import fairgrid.torch as ft  # noqa: E402


def test_zoo_shapes_are_recognised_and_others_refused():
    assert ft.arch_of(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))) == {"arch": "logreg"}
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    assert ft.arch_of(mlp) == {"arch": "mlp", "hidden": [64]}
    cnn = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1152, 128), nn.ReLU(), nn.Linear(128, 10))
    assert ft.arch_of(cnn) == {"arch": "cnn"}
    with pytest.raises(ft.UnsupportedModel):
        ft.arch_of(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Tanh()))


def test_a_trained_model_loads_back_into_the_network(testnet, tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    node = fairgrid.connect(testnet[0]["dir"])
    job = node.submit({"name": "torch", "model": ft.arch_of(net),
                       "data": {"source": "builtin", "max_train_samples": 2000, "shard_size": 500},
                       "training": {"rounds": 2}, "market": {"alpha": 0.5}})
    job.follow(progress=False, timeout=240)
    ft.load_into(net, job.download(tmp_path / "m.safetensors"))
    assert net(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
