"""torch.compile of the static path (issue #18 item 3, setting ``torch_compile``): compiled
and eager give the same keypoints and matches, a failure to compile falls back to eager with
one logged line, the setting is validated, and compiled code is found again by a new process.

Compiling is slow on the CPU (about 45 s per network cold, 8 s from the cache), so each network
is compiled once per module, into pytest's cache folder (warm on a rerun).

Parity measured on the CPU (2026-12-05, torch 2.13, freiburg frames 0-2 at 640x480, ALIKED and
SuperPoint 1024 keypoints, ALIKED-LightGlue adaptive): the same valid slots; keypoints within
6.1e-5 px, descriptors 1.6e-6 (inductor fuses and reorders float sums); every match set, stop
layer and per-point layer count identical, scores within 8.8e-5. The bounds below are ten
times that, far below what another keypoint (>= 1e-2 px) or a flipped match would change.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import he_normal_superpoint

from lightglue_ros.compiled import CACHE_ENV, CompiledFunction, compile_cache_dir
from lightglue_ros.cuda_graphs import GraphedExtractor, GraphedMatcher, build_matcher_runner
from lightglue_ros.errors import ConfigError
from lightglue_ros.features import FixedFeatures
from lightglue_ros.image import image_to_tensor, read_image
from lightglue_ros.models.extractors import build_extractor
from lightglue_ros.models.lightglue import LightGlue
from lightglue_ros.models.lightglue_static import StaticMatch
from lightglue_ros.ros.params import PARAMETERS, check_value
from lightglue_ros.tracker import Tracker, TrackerConfig

KEYPOINT_TOL = 1e-3  # pixels
DESCRIPTOR_TOL = 1e-4
SCORE_TOL = 1e-4  # keypoint scores
MATCH_SCORE_TOL = 1e-3  # match scores (the static path's own bound against the dynamic one)
FRAMES = 3
BUDGET = 1024
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def compile_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Compiled code kept in pytest's cache between runs (a temporary folder without one)."""
    cache = getattr(request.config, 'cache', None)
    folder = (Path(cache.mkdir('torch_compile')) if cache is not None
              else tmp_path_factory.mktemp('torch_compile'))
    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(folder))
    yield folder
    patch.undo()


@pytest.fixture(scope='module')
def images(freiburg_frames: list[Path]) -> list[torch.Tensor]:
    return [image_to_tensor(read_image(p)) for p in freiburg_frames[:FRAMES]]


def extractors(weights_dir: Path) -> dict[str, torch.nn.Module]:
    return {'aliked': build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                      max_keypoints=BUDGET),
            'superpoint': he_normal_superpoint(max_keypoints=BUDGET)}


@pytest.fixture(scope='module')
def extracted(compile_cache, images, weights_dir) -> dict[str, tuple[list, list, dict]]:
    """Per extractor: eager and compiled fixed features of the frames, compile seconds."""
    out = {}
    for name, extractor in extractors(weights_dir).items():
        eager, compiled = GraphedExtractor(extractor), GraphedExtractor(extractor, compile=True)
        out[name] = ([eager.extract_fixed(i) for i in images],
                     [compiled.extract_fixed(i) for i in images], compiled.compile_seconds())
        assert compiled._extract.fallback_reason is None
    return out


@pytest.fixture(scope='module')
def matched(compile_cache, extracted, weights_dir) -> tuple[list, list, dict]:
    """Eager and compiled static matches of ALIKED's pairs (same features), compile seconds."""
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    eager, compiled = GraphedMatcher(matcher, BUDGET), GraphedMatcher(matcher, BUDGET,
                                                                        compile=True)
    features = extracted['aliked'][0]
    results: tuple[list, list] = ([], [])
    for runner, into in zip((eager, compiled), results):
        prepared = [runner.prepare_fixed(f) for f in features]
        for i, j in ((0, 1), (1, 2), (0, 2)):
            static = runner.match_static(prepared[i], prepared[j])
            into.append(StaticMatch(*(t.clone() for t in (static.matches0, static.scores0,
                                                          static.stop, static.layers))))
    assert compiled._match_net.fallback_reason is None
    return *results, compiled.compile_seconds()


@pytest.mark.parametrize('name', ['aliked', 'superpoint'])
def test_compiled_extraction_equals_eager(extracted, name):
    eager, compiled, seconds = extracted[name]
    assert list(seconds) == [f'{name} extractor for 640x480 / {BUDGET} keypoints']
    for a, b in zip(eager, compiled):
        assert isinstance(b, FixedFeatures) and b.image_size == a.image_size == (640, 480)
        assert torch.equal(a.valid, b.valid) and int(a.valid.sum()) > 100
        # The same keypoints as a set: equal scores (SuperPoint's integer positions tie) may
        # come out of the top-k in another order.
        a, b = a.compact(), b.compact()
        distance = torch.cdist(b.keypoints.double(), a.keypoints.double())
        nearest = distance.argmin(1)
        assert float(distance.min(1).values.max()) <= KEYPOINT_TOL
        assert len(set(nearest.tolist())) == len(a)  # one to one
        assert float((a.scores[nearest] - b.scores).abs().max()) <= SCORE_TOL
        assert float((a.descriptors[nearest] - b.descriptors).abs().max()) <= DESCRIPTOR_TOL


def test_compiled_matcher_equals_eager(matched):
    eager, compiled, seconds = matched
    assert sorted(seconds) == [f'matcher for {BUDGET} keypoints',
                               f'matcher prepare for {BUDGET} keypoints']
    for a, b in zip(eager, compiled):
        assert torch.equal(a.matches0, b.matches0) and int((a.matches0 > -1).sum()) > 100
        assert int(a.stop) == int(b.stop) and torch.equal(a.layers, b.layers)
        assert float((a.scores0 - b.scores0).abs().max()) <= MATCH_SCORE_TOL


def test_compiled_skip_matcher_equals_eager_and_compiles_every_layer_first(matched,
                                                                           extracted,
                                                                           weights_dir):
    """static_early_exit skip compiled: the parts (begin, each layer, the assignment) each
    compiled, all of them at the first match (which exits early: a later, deeper frame must
    not stop for seconds to compile its layer), and eager's matches."""
    eager = matched[0]
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    compiled = GraphedMatcher(matcher, BUDGET, compile=True, early_exit='skip')
    prepared = [compiled.prepare_fixed(f) for f in extracted['aliked'][0]]
    n_layers = matcher.conf['n_layers']
    for number, (i, j) in enumerate(((0, 1), (1, 2), (0, 2))):
        result = compiled.match_static(prepared[i], prepared[j])
        if number == 0:
            assert compiled.last_layers_run < n_layers  # it exited, yet every layer compiled
            assert sorted(compiled.compile_seconds()) == sorted(
                [f'matcher prepare for {BUDGET} keypoints',
                 f'matcher begin for {BUDGET} keypoints',
                 f'matcher finish for {BUDGET} keypoints',
                 *(f'matcher layer {layer} for {BUDGET} keypoints'
                   for layer in range(n_layers))])
        a = eager[number]
        assert torch.equal(a.matches0, result.matches0)
        assert int(a.stop) == int(result.stop) and torch.equal(a.layers, result.layers)
        assert float((a.scores0 - result.scores0).abs().max()) <= MATCH_SCORE_TOL
    assert all(net.fallback_reason is None for net in compiled._layer_nets)


class Broken(RuntimeError):
    pass


def test_failed_compile_logs_once_and_runs_eager(extracted, weights_dir, monkeypatch, caplog):
    """torch.compile raising (as without a C++ compiler): one warning with the reason, then
    eager, with eager's matches."""
    def refuse(*args, **kwargs):
        raise Broken('no C++ compiler found\nsecond line of detail\nthird line')

    monkeypatch.setattr(torch, 'compile', refuse)
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    eager, runner = GraphedMatcher(matcher, BUDGET), GraphedMatcher(matcher, BUDGET, compile=True)
    features = extracted['aliked'][0]
    with caplog.at_level(logging.WARNING, logger='lightglue_ros.compiled'):
        for _ in range(2):
            got = runner.match_static(runner.prepare_fixed(features[0]),
                                      runner.prepare_fixed(features[1]))
            assert torch.equal(got.matches0, eager.match_static(
                eager.prepare_fixed(features[0]), eager.prepare_fixed(features[1])).matches0)
    logged = [r.getMessage() for r in caplog.records if 'torch_compile' in r.getMessage()]
    assert logged == [
        'torch_compile: compiling matcher prepare failed (Broken: no C++ compiler found second '
        'line of detail); running it eagerly',
        'torch_compile: compiling matcher failed (Broken: no C++ compiler found second line '
        'of detail); running it eagerly']
    assert runner.compile_seconds() == {}


def test_failure_at_the_first_call_falls_back_and_bad_input_keeps_compiling(caplog):
    """The compiled function raising on its first call (inductor's BackendCompilerFailed)
    falls back; an input that eager refuses too is the caller's error, compiling stays on."""
    calls = []

    def compiled_raises(fn, **kwargs):
        def run(*inputs):
            calls.append(inputs)
            raise Broken('backend raised')
        return run

    def double(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            raise ValueError('empty input')
        return x * 2

    function = CompiledFunction(double, 'double', lambda inputs: f'{len(inputs[0])} values')
    patch = pytest.MonkeyPatch()
    patch.setattr(torch, 'compile', compiled_raises)
    with pytest.raises(ValueError, match='empty input'):
        function(torch.zeros(0))
    assert function.fallback_reason is None
    with caplog.at_level(logging.WARNING, logger='lightglue_ros.compiled'):
        assert torch.equal(function(torch.ones(3)), torch.full((3,), 2.0))
        assert torch.equal(function(torch.ones(3)), torch.full((3,), 2.0))
    patch.undo()
    assert function.fallback_reason == 'Broken: backend raised' and len(calls) == 2
    assert sum('torch_compile' in r.getMessage() for r in caplog.records) == 1


def test_setting_is_validated_and_reaches_the_static_path(weights_dir, caplog):
    with pytest.raises(ConfigError, match='torch_compile must be one of off, on'):
        TrackerConfig(torch_compile='yes')
    assert TrackerConfig().torch_compile == 'off'
    spec = next(p for p in PARAMETERS if p.name == 'torch_compile')
    assert spec.default == 'off' and spec.tracker_key == 'torch_compile' and spec.read_only
    assert check_value(spec, 'on') is None
    assert "quote the value, 'on'" in check_value(spec, True)
    assert 'must be one of off, on' in check_value(spec, 'auto')
    extractor = build_extractor('aliked', weights=weights_dir / 'aliked-n16.pth',
                                max_keypoints=BUDGET)
    matcher = LightGlue('aliked', weights=weights_dir / 'aliked_lightglue.pth')
    on = Tracker(TrackerConfig(extractor='aliked', device='cpu', cuda_graphs='on',
                               torch_compile='on'), extractor=extractor, matcher=matcher)
    assert isinstance(on.runner._match_net, CompiledFunction)
    assert isinstance(on.fixed_extractor._extract, CompiledFunction)
    off = Tracker(TrackerConfig(extractor='aliked', device='cpu', cuda_graphs='on'),
                  extractor=extractor, matcher=matcher)
    assert not isinstance(off.runner._match_net, CompiledFunction)
    with caplog.at_level(logging.WARNING, logger='lightglue_ros.cuda_graphs'):
        runner = build_matcher_runner(matcher, 'auto', BUDGET, torch.device('cpu'),
                                      compile=True)
    assert runner is matcher  # the dynamic matcher: not compiled, and the log says so
    assert any('selects the dynamic matcher' in r.getMessage() for r in caplog.records)


CHILD = """
import json, sys, torch
from torch._dynamo.utils import counters
from lightglue_ros.compiled import CompiledFunction, compile_cache_dir
function = CompiledFunction(lambda x: torch.sin(x) * 2 + 1, 'toy', lambda inputs: 'toy')
with torch.inference_mode():
    function(torch.ones(8))
print(json.dumps({'hit': counters['inductor']['fxgraph_cache_hit'],
                  'miss': counters['inductor']['fxgraph_cache_miss'],
                  'folder': str(compile_cache_dir()), 'failed': function.fallback_reason}))
"""


def test_a_new_process_compiles_from_the_cache(tmp_path):
    """The cache folder is the user's cache dir unless $TORCHINDUCTOR_CACHE_DIR is set, and a
    second process finds the first one's compiled code there (a cache hit, no miss)."""
    env = {k: v for k, v in os.environ.items() if k != CACHE_ENV}
    env.update(XDG_CACHE_HOME=str(tmp_path / 'xdg'),
               PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), env.get('PYTHONPATH', '')]))

    def child(extra: dict[str, str]) -> dict:
        done = subprocess.run([sys.executable, '-c', CHILD], env={**env, **extra},
                              capture_output=True, text=True, check=True, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])

    folder = tmp_path / 'xdg' / 'lightglue_ros' / 'torch_compile'
    first, second = child({}), child({})
    assert first == {'hit': 0, 'miss': 1, 'folder': str(folder), 'failed': None}
    assert second == {'hit': 1, 'miss': 0, 'folder': str(folder), 'failed': None}
    assert any(folder.iterdir())
    explicit = tmp_path / 'explicit'
    assert child({CACHE_ENV: str(explicit)})['folder'] == str(explicit)
    assert any(explicit.iterdir())


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert compile_cache_dir() == tmp_path / 'lightglue_ros' / 'torch_compile'
    monkeypatch.setenv(CACHE_ENV, '~/mine')
    assert compile_cache_dir() == Path('~/mine').expanduser()
