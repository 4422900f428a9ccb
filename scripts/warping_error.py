#!/usr/bin/env python3
"""Warping error as issue 30 defines it, independently of stylize's own `E_warp`: the mean over
pixels, averaged over channels, of the squared difference in 8-bit levels between frame t and
frame t-1 warped (bilinear) to t by the renderer's backward motion, counting only pixels whose
motion lands inside frame t-1 and passes Ruder's forward-backward consistency test,
|b + f~|^2 <= 0.01 (|b|^2 + |f~|^2) + 0.5. Motion comes from a Blender shot's OpenEXR frames
(../shared/sequences/README.md gives the convention).

    scripts/warping_error.py SHOT_DIR 'IMAGES/frame_%04d.png' FRAMES
        (needs numpy, pillow and OpenEXR from PyPI; the images at the shot's size)

Measured 2026-12-03 (the orbit shot, tests/data/orbit, 16 frames, 256x144): the rendered
frames 17.37; `stylize sequence --quality standard` 35.18 (59.83 while the chain still
applied Ruder's motion-boundary test); its stills 1759.82. The shared rolling-ball shot's
rendered frames: 52.48. `stylize bench --shot` computes the same figure in Rust
(render::coherence) and agrees with this script to the printed digits.
"""
import sys

import numpy as np
from PIL import Image

from exr_channels import channels
src, pattern, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def bilinear(img, x, y):
    h,w=img.shape[:2]
    x0=np.floor(x).astype(int); y0=np.floor(y).astype(int); fx=x-x0; fy=y-y0
    def at(yy,xx): return img[np.clip(yy,0,h-1), np.clip(xx,0,w-1)]
    if img.ndim==3: fx=fx[...,None]; fy=fy[...,None]
    return (at(y0,x0)*(1-fx)*(1-fy)+at(y0,x0+1)*fx*(1-fy)+at(y0+1,x0)*(1-fx)*fy+at(y0+1,x0+1)*fx*fy)
errs=[]
for t in range(2,n+1):
    cur=channels(f"{src}/frame_{t:04d}.exr", np.float64); prev=channels(f"{src}/frame_{t-1:04d}.exr", np.float64)
    bx=cur["ViewLayer.Vector.X"]; by=-cur["ViewLayer.Vector.Y"]
    fx=-prev["ViewLayer.Vector.Z"]; fy=prev["ViewLayer.Vector.W"]
    a=np.asarray(Image.open(pattern%t).convert("RGB"),dtype=np.float64)
    b=np.asarray(Image.open(pattern%(t-1)).convert("RGB"),dtype=np.float64)
    h,w=bx.shape
    assert a.shape[:2] == (h, w), f"{pattern % t} is not at the shot's size {w}x{h}"
    yy,xx=np.mgrid[0:h,0:w].astype(np.float64)
    px=xx+bx; py=yy+by
    inside=(px>=0)&(px<=w-1)&(py>=0)&(py<=h-1)
    ftx=bilinear(fx,px,py); fty=bilinear(fy,px,py)
    cons=((bx+ftx)**2+(by+fty)**2) <= 0.01*(bx**2+by**2+ftx**2+fty**2)+0.5
    keep=inside&cons
    warped=bilinear(b,px,py)
    e=((a-warped)**2).mean(axis=-1)[keep].mean()
    errs.append(e)
print(f"{pattern}: mean E_warp over frames 2-{n}: {np.mean(errs):.2f} (the last frame kept {keep.mean():.1%} of its pixels)")
