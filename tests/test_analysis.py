"""Statistics on a model small enough to count by hand."""
import pytest

from tfq_tiny._compat import keras
from tfq_tiny.analysis import model_statistics


@pytest.fixture
def tiny():
    """input 8x8x2 -> conv3x3 4ch valid (6x6x4) -> relu -> conv1x1 4ch + skip add -> gap -> fc 3."""
    layers = keras.layers
    i = keras.Input((8, 8, 2), name="x")
    a = layers.Conv2D(4, 3, name="c1")(i)
    a = layers.ReLU(name="r1")(a)
    b = layers.Conv2D(4, 1, name="c2")(a)
    s = layers.Add(name="add")([a, b])
    g = layers.GlobalAveragePooling2D(name="gap")(s)
    return keras.Model(i, layers.Dense(3, name="fc")(g))


def test_macs_params_bops_by_hand(tiny):
    stats = model_statistics(tiny, "w4a8")
    by = {s.name: s for s in stats.ops}
    assert by["c1"].macs == 6 * 6 * 4 * (3 * 3 * 2)
    assert by["c2"].macs == 6 * 6 * 4 * 4
    assert by["fc"].macs == 4 * 3
    assert stats.macs == 2592 + 576 + 12
    assert stats.params == (72 + 4) + (16 + 4) + (12 + 3)
    assert by["c1"].bops == 2592 * 4 * 8
    assert stats.bops == (2592 + 576 + 12) * 32


def test_weight_memory_by_hand(tiny):
    stats = model_statistics(tiny, "w4a8")
    by = {s.name: s for s in stats.ops}
    assert by["c1"].weight_bytes == 72 * 4 // 8 + 4 * 4 + 4 * 4
    assert by["fc"].weight_bytes == -(-12 * 4 // 8) + 3 * 4 + 3 * 4
    two_bit = {s.name: s for s in model_statistics(tiny, "w2a8").ops}
    assert two_bit["c1"].weight_bytes == 72 * 2 // 8 + 32


def test_peak_activation_memory_keeps_skip_live(tiny):
    stats = model_statistics(tiny, "w8a8")
    by = {s.name: s for s in stats.ops}
    assert by["c1"].live_activation_bytes == 128 + 144
    assert by["c2"].live_activation_bytes == 144 + 144
    assert by["add"].live_activation_bytes == 144 * 3
    assert stats.peak_activation_bytes == 432 and stats.peak_op == "add"
    four = model_statistics(tiny, "w8a4")
    assert four.peak_activation_bytes == 72 * 3


def test_float_statistics_and_table(tiny):
    stats = model_statistics(tiny)
    assert stats.peak_activation_bytes == 144 * 3 * 4
    assert stats.weight_bytes == 4 * stats.params
    table = stats.table()
    assert "c1" in table and "total" in table and "peak RAM" in table
