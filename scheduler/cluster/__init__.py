"""The link to the Ray cluster: the detached controller actor that owns the GPU workers, the daemon's link to it
(which survives the controller's loss), and the inventory of GPUs it reports."""
