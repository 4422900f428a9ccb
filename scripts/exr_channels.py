"""A multipart OpenEXR file's channels by their full names (`part.channel`, as stylize names
them: Blender's `ViewLayer.Combined.R`), for the scripts that read Blender frames."""
import numpy as np
import OpenEXR


def channels(path, dtype=np.float32):
    """Every channel of every part of the file at `path`, by its full name."""
    found = {}
    with OpenEXR.File(str(path), separate_channels=True) as f:
        for part in f.parts:
            prefix = part.name() or ""
            for name, channel in part.channels.items():
                full = name if not prefix or name.startswith(prefix + ".") else f"{prefix}.{name}"
                found[full] = channel.pixels.astype(dtype)
    return found
