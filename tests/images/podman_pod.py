"""The emulator's kubelet (tests/k8s/kubelet.py) runs a stage Job's container `command` as a local
process; mapped to this script, it runs it in the stage image instead, the way a node would:

    kubelet: adaptinf stage <stage> --run R --step T   (the Job's command, env = the Job's env)
    here:    podman run … --entrypoint adaptinf IMAGE stage <stage> --run R --step T

Kubernetes' `command` replaces the image's ENTRYPOINT, hence --entrypoint. The container gets the
Job's environment and nothing of this machine's: every variable the kubelet set, except PATH,
HOME and the IMAGES_* / CONTAINERS_* settings below, which are podman's. Pod security as the operator's
Jobs and the chart ask: the image's non-root USER, read-only root filesystem, /tmp (an emptyDir
there) the only writable path besides the store's mount, no capabilities, no privilege escalation.

Stages not in IMAGES_RUN_STAGES never start: this process just waits until the kubelet kills it,
like a pod that is still running (the test needs extract and cluster-select, not training).
"""
from __future__ import annotations

import os
import sys
import time

OWN = ("PATH", "HOME", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")


def main(argv: list[str]) -> int:
    stage = argv[1] if len(argv) > 1 and argv[0] == "stage" else None
    if stage not in os.environ["IMAGES_RUN_STAGES"].split(","):
        while True:  # killed by the kubelet when the test ends
            time.sleep(60)
    forwarded = sorted(k for k in os.environ if k not in OWN and not k.startswith("IMAGES_"))
    cmd = ["podman", "run", "--rm", "--network", "host", "--label", os.environ["IMAGES_LABEL"],
           "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for mount in filter(None, os.environ.get("IMAGES_MOUNTS", "").split(",")):
        cmd += ["-v", mount]
    for name in forwarded:
        cmd += ["-e", name]  # without =VALUE: podman takes the value from this environment
    cmd += ["--entrypoint", "adaptinf", os.environ["IMAGES_STAGE"], *argv]
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
