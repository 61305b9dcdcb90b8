"""Launch the lightglue_ros matcher node (docs/node.md).

    ros2 launch lightglue_ros matcher.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info device:=cuda extractor:=aliked

Arguments: params_file (default: the installed config/matcher.yaml), image_topic,
camera_info_topic, namespace, device, extractor, compressed (subscribe
<image_topic>/compressed), log_level. device, extractor and compressed are passed after the
params file, so they override the file's values for those three keys.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('lightglue_ros'), 'config', 'matcher.yaml']),
            description='ROS parameters file of the node'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='sensor_msgs/Image topic (base topic if compressed)'),
        DeclareLaunchArgument('camera_info_topic', default_value='camera_info',
                              description='sensor_msgs/CameraInfo topic'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node (and its relative topics)'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto | cpu | cuda | cuda:N'),
        DeclareLaunchArgument('extractor', default_value='superpoint',
                              choices=['superpoint', 'disk', 'aliked'],
                              description='keypoint extractor'),
        DeclareLaunchArgument('compressed', default_value='false', choices=['true', 'false'],
                              description='subscribe <image_topic>/compressed'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug | info | warn | error | fatal'),
    ]
    image_topic = LaunchConfiguration('image_topic')
    matcher = Node(
        package='lightglue_ros',
        executable='matcher_node',
        name='lightglue_matcher',
        namespace=LaunchConfiguration('namespace'),
        parameters=[
            LaunchConfiguration('params_file'),
            {
                'device': LaunchConfiguration('device'),
                'extractor': LaunchConfiguration('extractor'),
                'compressed_input': ParameterValue(LaunchConfiguration('compressed'),
                                                   value_type=bool),
            },
        ],
        remappings=[
            ('image', image_topic),
            ('image/compressed', [image_topic, '/compressed']),
            ('camera_info', LaunchConfiguration('camera_info_topic')),
        ],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        output='screen',
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, matcher])
