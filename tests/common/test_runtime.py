import pytest

from common import runtime


def test_a_requested_stop_is_raised_at_the_next_check():
    runtime.check_stop()  # nothing requested: no-op
    runtime.request_stop()
    try:
        with pytest.raises(KeyboardInterrupt):
            runtime.check_stop()
    finally:
        runtime._STOP.clear()
    runtime.check_stop()
