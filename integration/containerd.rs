//! bootstrap-runc as containerd's runtime: a private containerd, images imported locally.
