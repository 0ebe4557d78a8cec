"""Sub-byte packing: exact TFLite byte layout, round trips and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfq_tiny.errors import BitWidthError, ModelFileError
from tfq_tiny.export.packing import pack, packed_size, unpack
from tfq_tiny.quantization.grid import int_range


def test_int4_low_nibble_holds_the_first_element():
    assert pack([1, -1], 4).tolist() == [0xF1]
    assert pack([-8, 7, 0, -1], 4).tolist() == [0x78, 0xF0]


def test_int2_least_significant_pair_first():
    assert pack([1, -2, 0, -1], 2).tolist() == [0b11_00_10_01]
    assert pack([-2, -2, -2, -2, 1], 2).tolist() == [0b10_10_10_10, 0b00_00_00_01]


def test_odd_tails_are_zero_padded():
    assert pack([-1, -1, -1], 4).tolist() == [0xFF, 0x0F]
    assert pack([-1], 2).tolist() == [0b11]
    assert unpack(bytes([0xFF, 0x0F]), 4, 3).tolist() == [-1, -1, -1]


def test_int8_is_identity():
    values = np.arange(-128, 128, dtype=np.int64)
    assert pack(values, 8).view(np.int8).tolist() == values.tolist()
    assert unpack(pack(values, 8), 8, 256).tolist() == values.tolist()


def test_unpack_matches_tflite_unpack_dense_int4_into_int8():
    raw = np.arange(256, dtype=np.uint8)
    expected = []
    for byte in raw.view(np.int8):
        expected += [int(np.int8(byte << 4) >> 4), int(byte >> 4)]
    assert unpack(raw, 4, 512).tolist() == expected


def test_multidimensional_values_pack_in_c_order():
    values = np.array([[1, 2, 3], [-4, -5, -6]])
    assert unpack(pack(values, 4), 4, values.size).reshape(values.shape).tolist() == values.tolist()


@settings(max_examples=150, deadline=None)
@given(bits=st.sampled_from([2, 4, 8]), data=st.data())
def test_round_trip_any_length(bits, data):
    lo, hi = int_range(bits)
    values = data.draw(st.lists(st.integers(lo, hi), max_size=67))
    packed = pack(values, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(len(values), bits)
    out = unpack(packed, bits, len(values))
    assert out.dtype == np.int8 and out.tolist() == values


@pytest.mark.parametrize("bits,bad", [(4, 8), (4, -9), (2, 2), (2, -3), (8, 128)])
def test_out_of_range_values_raise_bit_width_error(bits, bad):
    with pytest.raises(BitWidthError, match=r"does not fit in \d bits"):
        pack([0, bad], bits)


def test_other_errors():
    with pytest.raises(BitWidthError):
        pack([0], 3)
    with pytest.raises(ValueError, match="integer"):
        pack([0.5], 4)
    with pytest.raises(ModelFileError, match="truncated"):
        unpack(bytes([0x12]), 4, 3)
    with pytest.raises(ModelFileError):
        unpack(b"", 2, 1)
    assert unpack(bytes([0x21, 0xFF]), 4, 2).tolist() == [1, 2]
