"""The client side of a job: Triton gRPC (several servers), face tracking, the pipelined job, its options and the mp4 writer."""
