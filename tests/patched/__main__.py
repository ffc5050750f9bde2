"""Monkey-patch with gevent, before anything else is imported, then run one case (see the
package's docstring)."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402  (after the patching, which is the point)

from patched.run import run  # noqa: E402

run(sys.argv[1])
