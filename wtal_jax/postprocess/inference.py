"""Batched, jit-compiled inference over test videos of different lengths (SPEC §5.1), for any
method (its ``segments`` and ``videos``, see ``wtal_jax.method``).

The heavy part, the network, runs on *packed* chunks: videos are laid one after another in
fixed-size (N, D) chunks with one zero segment between neighbours. That zero row is exactly the
"same" padding each video would see at its borders, so every real segment gets the value it
gets alone (a network of several such layers zeroes what lies outside ``valid`` between them),
and one compiled program serves every length with little padding. Only the light per-segment
outputs are then unpacked to (V, T, ...) with each video's own length T' for the method's
``videos`` (the top-k selection), which masks everything past T'.

Compiled programs: one for the chunks, one per padded video count for the selection.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from wtal_jax.data import sampling
from wtal_jax.postprocess.localization import VideoOutput


@dataclasses.dataclass(frozen=True)
class PackedVideos:
    """Sampled test videos packed into chunks; built once, reused for every evaluation.

    chunks: (K, N, D) float32, zero between and after videos.
    start: (V,) flat index of each video's first segment in ``chunks.reshape(-1, D)``.
    lengths: (V,) T', the sampled length (min(n, T), or T with fixed sampling).
    num_segments: (V,) n, original lengths.
    """
    chunks: np.ndarray
    start: np.ndarray
    lengths: np.ndarray
    num_segments: np.ndarray


def pack(features: list[np.ndarray], *, num_segments: int, chunk_size: int,
         fixed: bool = False) -> PackedVideos:
    """Test-samples each (n_i, D) video to T' = min(n_i, T) segments (T with ``fixed``, see
    ``sampling.test_indices``) and packs them in order.

    A video that does not fit in the rest of a chunk starts the next one; each video is
    followed by one zero segment. ``chunk_size`` must exceed T.
    """
    if chunk_size <= num_segments:
        raise ValueError(f'chunk size {chunk_size} must exceed T = {num_segments}')
    dim = features[0].shape[1]
    lengths = np.array([sampling.test_length(len(f), num_segments, fixed=fixed)
                        for f in features], np.int64)
    starts, position = [], 0
    for length in lengths:
        chunk_end = (position // chunk_size + 1) * chunk_size
        if position + length + 1 > chunk_end:
            position = chunk_end
        starts.append(position)
        position += length + 1
    num_chunks = max(1, -(-position // chunk_size))
    flat = np.zeros((num_chunks * chunk_size, dim), np.float32)
    for f, start, length in zip(features, starts, lengths):
        flat[start:start + length] = f[sampling.test_indices(len(f), num_segments, fixed=fixed)]
    return PackedVideos(chunks=flat.reshape(num_chunks, chunk_size, dim),
                        start=np.asarray(starts, np.int64), lengths=lengths,
                        num_segments=np.array([len(f) for f in features], np.int64))


def on_device(packed: PackedVideos) -> PackedVideos:
    """The same videos with their chunks copied to the default device once, so that repeated
    evaluations (every ``eval.every_steps`` during training) do not copy them again."""
    return dataclasses.replace(packed, chunks=jax.device_put(packed.chunks))


def _valid(packed: PackedVideos) -> np.ndarray:
    """(K, N) bool: which rows of the chunks are a video's own segments."""
    flat = np.zeros(packed.chunks.shape[0] * packed.chunks.shape[1], bool)
    for start, length in zip(packed.start, packed.lengths):
        flat[start:start + length] = True
    return flat.reshape(packed.chunks.shape[:2])


class Predictor:
    """Compiled inference of one method and network; counts how many programs it compiled.

    ``video_multiple`` pads the video count of the selection step to a multiple of it, so data
    sets of similar size share one program.
    """

    def __init__(self, method, module, hp, *, video_multiple: int = 64):
        self.compilations = 0
        self.video_multiple = video_multiple

        def counted(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                self.compilations += 1  # runs once per trace, i.e. per compiled program
                return fn(*args, **kwargs)
            return wrapper

        def embed(params, chunk, valid):
            return method.segments(module, params, chunk, hp=hp, valid=valid)

        def select(seg, lengths):
            out = method.videos(seg, hp=hp, lengths=lengths)
            return out._asdict() if hasattr(out, '_asdict') else dict(out)

        self._embed = jax.jit(counted(embed))
        self._select = jax.jit(counted(select))

    def embed(self, params, packed: PackedVideos) -> dict:
        """Runs every chunk: the method's per-segment outputs, flat {name: (K*N, ...)}."""
        valid = _valid(packed)
        outs = [self._embed(params, chunk, ok) for chunk, ok in zip(packed.chunks, valid)]
        return {name: jnp.concatenate([o[name] for o in outs]) for name in outs[0]}

    def __call__(self, params, packed: PackedVideos, *, num_segments: int,
                 durations=None) -> list[VideoOutput]:
        """Per-video outputs (NumPy) for every packed video, in packing order."""
        flat = self.embed(params, packed)
        num_videos = len(packed.lengths)
        padded = -(-num_videos // self.video_multiple) * self.video_multiple
        index = packed.start[:, None] + np.arange(num_segments)[None, :]
        index = np.where(np.arange(num_segments)[None, :] < packed.lengths[:, None], index, 0)
        index = np.pad(index, ((0, padded - num_videos), (0, 0)))
        lengths = np.pad(packed.lengths, (0, padded - num_videos), constant_values=1)
        out = jax.device_get(self._select({name: x[index] for name, x in flat.items()},
                                          jnp.asarray(lengths)))
        out = {name: x for name, x in out.items() if x is not None}
        return [VideoOutput(
            outputs={name: x[i] for name, x in out.items()}, length=int(length),
            num_segments=int(packed.num_segments[i]),
            duration=None if durations is None or not np.isfinite(durations[i])
            else float(durations[i]))
            for i, length in enumerate(packed.lengths)]
