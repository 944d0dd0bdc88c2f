"""Single-modality baselines on a built AV-Digits dataset, to tune the builder's corruption defaults.

Image: logistic regression on pixels and a small CNN. Audio: a small CNN on log-mel spectrograms (pooled log-mel
features with linear models stay far below it under noise). Text: char n-gram TF-IDF + logistic regression (a missing
transcript is its own token). Takes about a minute on 2 CPU cores for the default sizes.

Usage::

    python examples/build_avdigits.py --output_dir data/avdigits
    python examples/avdigits_proxy_baselines.py data/avdigits
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from datasets import Dataset, load_from_disk
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn


def mel_filterbank(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1)."""
    mel = np.linspace(0, 2595 * np.log10(1 + sr / 2 / 700), n_mels + 2)
    bins = np.floor((n_fft + 1) * 700 * (10 ** (mel / 2595) - 1) / sr).astype(int)
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(1, n_mels + 1):
        lo, mid, hi = bins[m - 1], bins[m], bins[m + 1]
        fb[m - 1, lo:mid] = (np.arange(lo, mid) - lo) / max(mid - lo, 1)
        fb[m - 1, mid:hi] = (hi - np.arange(mid, hi)) / max(hi - mid, 1)
    return fb


def log_mel(ds: Dataset, n_fft: int = 256, hop: int = 160, n_mels: int = 32) -> np.ndarray:
    """Log-mel spectrograms, shape (n, frames, n_mels)."""
    audio = np.asarray(ds["audio"], np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft, axis=1)[:, ::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return np.log(power @ mel_filterbank(n_mels, n_fft, ds[0]["sampling_rate"]).T + 1e-6).astype(np.float32)


def pixels(ds: Dataset) -> np.ndarray:
    return np.stack([np.asarray(im, np.float32) / 255 for im in ds["image"]])


def cnn_scores(x_train: np.ndarray, y_train: list[int], evals: dict, epochs: int = 15, width: int = 16) -> dict:
    """Train a 3-block CNN on 2-D inputs (n, H, W) and return its accuracy on each ``evals[name] = (x, y)``."""
    torch.manual_seed(0)
    c = width
    model = nn.Sequential(
        *(
            layer
            for c_in, c_out in ((1, c), (c, 2 * c), (2 * c, 4 * c))
            for layer in (nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))
        ),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(4 * c, 10),
    )
    mean, std = x_train.mean(), x_train.std()
    x, y = torch.tensor((x_train - mean) / std)[:, None], torch.tensor(y_train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return {
            name: (model(torch.tensor((xe - mean) / std)[:, None]).argmax(1).numpy() == np.asarray(ye)).mean()
            for name, (xe, ye) in evals.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir")
    dataset = load_from_disk(parser.parse_args().dataset_dir)
    train, evals = dataset["train"], [s for s in ("test", "test_real") if s in dataset]

    def sklearn_scores(featurize, model) -> dict:
        model.fit(featurize(train), train["label"])
        return {s: model.score(featurize(dataset[s]), dataset[s]["label"]) for s in evals}

    def cnn(featurize) -> dict:
        return cnn_scores(
            featurize(train), train["label"], {s: (featurize(dataset[s]), dataset[s]["label"]) for s in evals}
        )

    results = {
        "image LR": sklearn_scores(
            lambda ds: pixels(ds).reshape(len(ds), -1),
            make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)),
        ),
        "image CNN": cnn(pixels),
        "audio CNN": cnn(log_mel),
        "text LR": sklearn_scores(
            lambda ds: [t if t is not None else "<none>" for t in ds["text"]],
            make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)), LogisticRegression(max_iter=2000)),
        ),
    }
    for name, scores in results.items():
        print(f"{name:10s}", "  ".join(f"{s}={acc:.3f}" for s, acc in scores.items()))


if __name__ == "__main__":
    main()
