"""The thread policy's mechanics (harness.core.threads); the entry points that apply it: tests/test_thread_policy.py."""

import pytest
import torch

from harness.core.threads import policy_threads, thread_policy
from harness.errors import InputError


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default")
def test_default_is_one_thread_on_cpu_and_a_given_count_wins():
    assert policy_threads(None) == 1
    assert policy_threads(3) == 3


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_a_bad_count_is_an_input_error_naming_the_flag(bad):
    with pytest.raises(InputError) as err:
        policy_threads(bad)
    assert err.value.field == "--threads" or err.value.file == "--threads"


def test_the_block_sets_the_count_and_restores_the_callers():
    before = torch.get_num_threads()
    with thread_policy(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), thread_policy(2):
        raise RuntimeError("restored on error too")
    assert torch.get_num_threads() == before
