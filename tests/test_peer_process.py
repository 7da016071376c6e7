import sys

import numpy
import pytest

from ewoksxpcs.tools.peer_process import RemotePeer


def test_remote_peer_calls_and_times_in_its_own_process():
    x = numpy.arange(6.0)
    peer = RemotePeer(sys.executable, "numpy:outer", {"a": x, "b": x}, {"a": x[:2], "b": x[:3]})
    try:
        r, wall, cpu = peer.call("small")
        assert r.shape == (2, 3)
        r, wall, cpu = peer.call()
        numpy.testing.assert_array_equal(r, numpy.outer(x, x))
        assert wall > 0 and cpu >= 0
        peer.function = "os:getpid"  # the child's process, not ours
        peer._paths["data"] = {}
        pid, _, _ = peer.call()
        assert int(pid) != __import__("os").getpid()
        peer.function = "numpy:no_such_function"
        with pytest.raises(RuntimeError, match="AttributeError"):
            peer.call()
    finally:
        peer.close()


def test_remote_peer_tuple_results():
    x = numpy.array([0.0, 1.0, 1.0, 3.0])
    peer = RemotePeer(sys.executable, "numpy:histogram", {"a": x}, {"a": x}, {"bins": 3})
    try:
        (hist, edges), _, _ = peer.call()
        numpy.testing.assert_array_equal(hist, [1, 2, 1])
        assert edges.shape == (4,)
    finally:
        peer.close()
