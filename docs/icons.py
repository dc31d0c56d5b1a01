"""Draws the app's icons (public/icons/): the shapes world's default prompt, "a yellow star and a
red circle on a navy background", with Python's standard library only (zlib + struct PNGs,
4x4 supersampling). The maskable icon keeps its shapes inside the central 80 % circle that
launchers may cut to. Run: python3 docs/icons.py"""
import math
import struct
import zlib
from pathlib import Path

NAVY, YELLOW, RED = (0, 0, 128), (255, 255, 0), (255, 0, 0)
OUT = Path(__file__).resolve().parent.parent / "public" / "icons"


def star(x, y, cx, cy, r):
    """Inside a five-pointed star of outer radius r (inner 0.45 r), point up."""
    dx, dy = x - cx, y - cy
    d = math.hypot(dx, dy)
    if d > r:
        return False
    a = (math.atan2(dx, -dy) % (2 * math.pi / 5)) - math.pi / 5  # angle from the nearest point
    inner = 0.45 * r
    # The edge between a point (angle 0 at radius r) and a notch (angle pi/5 at radius inner).
    p = (r * math.cos(math.pi / 5), r * math.sin(math.pi / 5))
    q = (inner, 0.0)
    a = abs(a)
    px, py = d * math.cos(math.pi / 5 - a), d * math.sin(math.pi / 5 - a)
    # Inside when on the origin's side of the line p-q.
    cross = lambda ax, ay, bx, by: ax * by - ay * bx
    return cross(q[0] - p[0], q[1] - p[1], px - p[0], py - p[1]) * cross(q[0] - p[0], q[1] - p[1], -p[0], -p[1]) >= 0


def draw(size, scale):
    """scale: the shapes' extent as a fraction of the icon (1 for 'any', 0.8 for maskable)."""
    rows = []
    n = 4
    for j in range(size):
        row = bytearray([0])
        for i in range(size):
            acc = [0, 0, 0]
            for sj in range(n):
                for si in range(n):
                    x = ((i + (si + 0.5) / n) / size - 0.5) / scale + 0.5
                    y = ((j + (sj + 0.5) / n) / size - 0.5) / scale + 0.5
                    if star(x, y, 0.36, 0.40, 0.27):
                        c = YELLOW
                    elif math.hypot(x - 0.66, y - 0.66) < 0.22:
                        c = RED
                    else:
                        c = NAVY
                    for k in range(3):
                        acc[k] += c[k]
            row += bytes(round(v / (n * n)) for v in acc)
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


OUT.mkdir(parents=True, exist_ok=True)
for name, size, scale in [("icon-192.png", 192, 1.0), ("icon-512.png", 512, 1.0), ("icon-maskable-512.png", 512, 0.8)]:
    (OUT / name).write_bytes(draw(size, scale))
    print(OUT / name)
