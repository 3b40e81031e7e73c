//! Executor: runs processes in a rootfs under an OCI runtime (runc / crun).
