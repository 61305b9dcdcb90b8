"""lightglue_ros: fast learned feature tracking (SuperPoint/DISK/ALIKED + LightGlue) for ROS 2.

The core (models, tracker, geometry) is ROS-free; ``lightglue_ros.ros`` holds the node.
"""
__version__ = '0.1.0'
