"""Moved to :mod:`sss_rt.network.model` (the runtime uses the network without the training
package); this name stays for scripts that import it from here."""

from sss_rt.network.model import *  # noqa: F403
