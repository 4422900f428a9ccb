"""A shot's frames as messages: content, motion, mask and frame number; frame patterns as farms
write them (`####`, `%04d`, `$F4`)."""

import re
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from .stylize.v1 import stylize_pb2 as pb

#: A motion read by the server from the frame's own OpenEXR file: Blender's Vector pass
#: (to the previous frame: X, -Y; to the next: -Z, W). `exr_motion(x, y, ...)` names others.
IN_CONTENT = pb.Motion(exr=pb.ExrMotion())

_TOKEN = re.compile(r"#+|%0?(\d*)d|\$F(\d*)(?![A-Za-z0-9_])")


def frame_path(pattern: Union[str, Path], number: int) -> Path:
    """Frame `number`'s file in `pattern`, whose file name holds the number as a run of `#`
    (padded to its length), `%04d` or `$F4` (padded to 4; `%d` and `$F` unpadded)."""
    text = str(pattern)
    folder, _, name = text.rpartition("/")
    match = _TOKEN.search(name)
    if match is None:
        raise ValueError(f"{text!r} has no frame number in its file name (####, %04d or $F4)")
    token = match.group(0)
    width = len(token) if token.startswith("#") else int(match.group(1) or match.group(2) or 1)
    name = name[:match.start()] + f"{number:0{width}d}" + name[match.end():]
    return Path(f"{folder}/{name}" if folder else name)


def frame_number(path: Union[str, Path]) -> int:
    """The frame number in a file's name: its last run of digits."""
    digits = re.findall(r"\d+", Path(path).name)
    if not digits:
        raise ValueError(f"{str(path)!r} has no frame number in its name")
    return int(digits[-1])


def exr_motion(x_channel: str, y_channel: str, *, negate_x: bool = False, negate_y: bool = False,
               file: bytes = b"") -> pb.Motion:
    """Motion from two channels of an OpenEXR file (`part.channel` in multipart files); with no
    `file`, of the frame's own content, so a renderer's frame is sent once."""
    return pb.Motion(exr=pb.ExrMotion(file=file, x_channel=x_channel, y_channel=y_channel,
                                      negate_x=negate_x, negate_y=negate_y))


def _motion(motion) -> Optional[pb.Motion]:
    """A `pb.Motion` as it is, or a Middlebury `.flo` file (bytes or a path)."""
    if motion is None or isinstance(motion, pb.Motion):
        return motion
    data = motion if isinstance(motion, bytes) else Path(motion).read_bytes()
    return pb.Motion(flo=data)


def _bytes(data: Union[bytes, str, Path]) -> bytes:
    return data if isinstance(data, bytes) else Path(data).read_bytes()


def frame(content: Union[bytes, str, Path], *, motion_to_previous=None, motion_to_next=None,
          mask: Union[bytes, str, Path, None] = None, number: Optional[int] = None
          ) -> pb.SequenceFrame:
    """One frame of a shot: its image (PNG, JPEG or OpenEXR), its motion to the previous frame
    (required after the first) and optionally to the next (for the consistency check), each a
    `pb.Motion` (`IN_CONTENT`, `exr_motion(...)`) or a `.flo` file; `mask` a greyscale image,
    white where the previous frame holds; `number` the frame's number in the shot (echoed on
    its events and result; default: the previous frame's plus one)."""
    message = pb.SequenceFrame(content=_bytes(content), motion_to_previous=_motion(motion_to_previous),
                               motion_to_next=_motion(motion_to_next),
                               mask=_bytes(mask) if mask is not None else b"")
    if number is not None:
        message.number = number
    return message


def blender_frames(paths: Iterable[Union[str, Path]], *, continues: bool = False
                   ) -> Iterator[pb.SequenceFrame]:
    """A shot Blender rendered as multilayer OpenEXR with its Vector pass, in order, each frame
    numbered from its file name: each file is read as it is sent, once, with its motion read
    from it by the server. `continues`: the shot continues from a frame before the first (a
    chunk), so the first frame sends its motion to the previous frame too."""
    for index, path in enumerate(paths):
        yield frame(path, motion_to_previous=IN_CONTENT if index or continues else None,
                    motion_to_next=IN_CONTENT, number=frame_number(path))
