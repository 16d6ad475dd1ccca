"""Emulated hosts: real KVM of a Debian kernel inside a TCG-emulated AMD host.

Public API::

    from rig.emulate import EmulatedHost, probe_args

    with EmulatedHost("EPYC-Rome", "6.12", {"kvm_amd.npt": "0"}) as host:   # or
    # with EmulatedHost.from_spec("emulated:EPYC-Rome@6.12,npt=0") as host:
        host.profile                                  # rig.host.profile.HostProfile
        r = host.run_l2(probe_args("EPYC-Rome"), timeout=30, qmp=True)   # L2Result
        r.exit_status, r.serial, r.report(), r.feature_words()

See rig/emulate/host.py (boot, data channel, timeouts), rig/emulate/l2.py
(L2 command lines, results) and rig/images/l1.py (the L1 image).
"""

from .host import EmulatedHost, EmulateError, HostSpec, L1BootTimeout, params_label, parse_host_spec, parse_params
from .l2 import EXIT_PROBE_FAIL, EXIT_PROBE_OK, L2Result, probe_args

__all__ = ["EmulatedHost", "EmulateError", "L1BootTimeout", "L2Result", "probe_args", "parse_params",
           "params_label", "parse_host_spec", "HostSpec", "EXIT_PROBE_OK", "EXIT_PROBE_FAIL"]
