"""Moved to :mod:`sss_rt.network.checkpoint` (the runtime uses the network without the training
package); this name stays for scripts that import it from here."""

from sss_rt.network.checkpoint import *  # noqa: F403
