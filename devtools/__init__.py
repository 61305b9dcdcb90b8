"""Development tools for the tests and benchmarks (reference models, ROS spinning helpers);
not installed with lightglue_ros."""
