#!/usr/bin/env python3
"""Times PyTorch's training step of the paper's two-tower AlexNet, the counterpart of `alexnet-mpi bench`.

The network is docs/model.md's, built as Tests/Fixtures/make_fixture.py builds it (the same layer table, tower-local
LRN and forward pass), in float32 with the paper's initialisation, dropout 0.5 in fc6 and fc7, mean softmax
cross-entropy and torch.optim.SGD(momentum=0.9, weight_decay=5e-4): forward, loss, backward and update are timed
together on synthetic input, after warm-up, as bench times its step. Only torch is needed (no numpy, no safetensors).
Usage: pytorch_step.py [--width 1] [--classes 1000] [--batch 128] [--threads 2] [--steps 3] [--warmup 1]
The last line printed is JSON (images_per_second, step_ms, peak_resident_bytes, parameters, ...), like bench's.
"""
import argparse, json, math, os, re, resource, sys, time, warnings

warnings.filterwarnings("ignore", message=".*Failed to initialize NumPy.*")  # torch without numpy: harmless here
try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    sys.exit(f"pytorch_step.py: error: PyTorch is not importable by {sys.executable} ({e}); "
             "install it with: pip install torch --index-url https://download.pytorch.org/whl/cpu")

# The layer table of Tests/Fixtures/make_fixture.py (importable with torch alone):
# (name, paper out-channels, kernel, stride, pad, groups) -- groups=2 means tower-local.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures"))
from make_fixture import CONVS, FCS, LRN, BIAS_ONE, even  # noqa: E402


def make_params(width, classes, gen):
    """The paper's initialisation: weights N(0, 0.01²), biases 1 in BIAS_ONE and 0 elsewhere; PyTorch's layouts."""
    p, cin = {}, 3
    for name, cout, k, s, pad, g in CONVS:
        cout = even(cout * width)
        p[name + ".weight"] = torch.randn(cout, cin // g, k, k, generator=gen) * 0.01
        p[name + ".bias"] = torch.full((cout,), 1.0 if name in BIAS_ONE else 0.0)
        cin = cout
    fin = cin * 6 * 6
    for name, fout in FCS + [("fc8", classes)]:
        fout = fout if name == "fc8" else even(fout * width)
        p[name + ".weight"] = torch.randn(fout, fin, generator=gen) * 0.01
        p[name + ".bias"] = torch.full((fout,), 1.0 if name in BIAS_ONE else 0.0)
        fin = fout
    return {k: v.requires_grad_(True) for k, v in p.items()}


def tower_lrn(x):
    """LRN inside each tower: (N, C, H, W) seen as (2N, C/2, H, W) -- a view, each tower's channels apart --
    equals make_fixture.py's chunk-and-concatenate without the copies. PyTorch divides alpha by n: pass alpha·n."""
    n, c, h, w = x.shape
    y = F.local_response_norm(x.reshape(2 * n, c // 2, h, w), LRN["size"], alpha=LRN["alpha"] * LRN["size"],
                              beta=LRN["beta"], k=LRN["k"])
    return y.reshape(n, c, h, w)


def forward(p, x, dropout):
    """make_fixture.py's forward pass, with dropout in fc6 and fc7 (the fixture turns it off)."""
    for name, _, k, s, pad, g in CONVS:
        x = F.relu(F.conv2d(x, p[name + ".weight"], p[name + ".bias"], stride=s, padding=pad, groups=g), inplace=True)
        if name in ("conv1", "conv2"):
            x = tower_lrn(x)
        if name in ("conv1", "conv2", "conv5"):
            x = F.max_pool2d(x, 3, 2)
    x = x.flatten(1)   # index c·36 + h·6 + w, as the contract says
    for name in ("fc6", "fc7"):
        x = F.dropout(F.relu(F.linear(x, p[name + ".weight"], p[name + ".bias"]), inplace=True), dropout, training=True)
    return F.linear(x, p["fc8.weight"], p["fc8.bias"])


def torch_build():
    """One line: torch version, oneDNN and MKL versions, the CPU capability in use."""
    show = torch.__config__.show()
    parts = [f"torch {torch.__version__}"]
    m = re.search(r"MKL-DNN v([\w.]+)", show)
    parts.append(f"oneDNN {m.group(1)}" if m and torch.backends.mkldnn.is_available() else "no oneDNN")
    m = re.search(r"Math Kernel Library Version ([\w.]+)", show)
    parts.append(f"MKL {m.group(1)}" if m and torch.backends.mkl.is_available() else "no MKL")
    m = re.search(r"CPU capability usage: (\w+)", show)
    if m:
        parts.append(f"CPU capability {m.group(1)}")
    return ", ".join(parts)


def main():
    ap = argparse.ArgumentParser(description="Time PyTorch's training step of the paper's two-tower AlexNet.")
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier W (1 = the paper)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=3, help="timed steps, after the warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (bench takes 1)")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--channels-last", action="store_true",
                    help="NHWC activations and conv weights (oneDNN's own layout; not the default a user gets)")
    a = ap.parse_args()
    for name, ok in [("width", 0 < a.width <= 16 and math.isfinite(a.width)), ("classes", a.classes >= 1),
                     ("batch", a.batch >= 1), ("threads", a.threads >= 1), ("steps", a.steps >= 1),
                     ("warmup", a.warmup >= 0), ("dropout", 0 <= a.dropout < 1)]:
        if not ok:
            ap.error(f"--{name} {getattr(a, name)} is out of range")

    torch.set_num_threads(a.threads)
    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB
    gen = torch.Generator().manual_seed(1)
    p = make_params(a.width, a.classes, gen)
    parameters = sum(v.numel() for v in p.values())
    x = torch.randn(a.batch, 3, 227, 227, generator=gen) * 50    # pixel-like, mean-subtracted, as bench's input
    y = torch.arange(a.batch) % a.classes                          # bench's labels
    if a.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        for k, v in p.items():
            if v.dim() == 4:
                v.data = v.data.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(list(p.values()), lr=0.001, momentum=0.9, weight_decay=5e-4)   # bench's lr

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(p, x, a.dropout), y)   # mean over the batch
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    if not math.isfinite(loss):
        sys.exit(f"pytorch_step.py: error: the loss is {loss} after {a.warmup + a.steps} steps: the timing is of a broken step")
    fastest, mean = min(times), sum(times) / len(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    build = torch_build()
    print(f"PyTorch: {build}; {torch.get_num_threads()} threads")
    print(f"network: W = {a.width:g}, {a.classes} classes, {parameters:,} parameters, dropout {a.dropout:g}")
    print(f"training step (batch {a.batch}, {a.threads} threads): fastest of {a.steps} {fastest * 1e3:.1f} ms "
          f"(mean {mean * 1e3:.1f})  →  {a.batch / fastest:.2f} images/s; loss {loss:.4f}")
    print(f"peak resident memory: {peak / 1e9:.2f} GB (of which {rss_after_import / 1e9:.2f} GB on importing torch)")
    print(json.dumps(dict(images_per_second=a.batch / fastest, step_ms=fastest * 1e3, mean_step_ms=mean * 1e3,
                          batch=a.batch, threads=a.threads, width=a.width, classes=a.classes, parameters=parameters,
                          peak_resident_bytes=peak, resident_after_import_bytes=rss_after_import,
                          torch_version=torch.__version__, torch_build=build), sort_keys=True))


if __name__ == "__main__":
    main()
