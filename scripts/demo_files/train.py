"""Softmax regression on a 3-class Gaussian-blob data set, trained with minibatch SGD.

A small but real training script: it makes its data, keeps a learning rate that
it lowers when validation stalls (`lr /= 4`, state carried across epochs),
writes its weights to model.npy, and logs with git-flor.
"""

import numpy as np

import git_flor as flor

lr = flor.arg("lr", 0.5)
epochs = flor.arg("epochs", 8)
batch = flor.arg("batch", 32)
seed = flor.arg("seed", 0)

rng = np.random.default_rng(seed)
centers = rng.normal(scale=0.6, size=(3, 8))
labels = rng.integers(0, 3, size=900)
X = centers[labels] + rng.normal(size=(900, 8))
X_train, y_train, X_val, y_val = X[:700], labels[:700], X[700:], labels[700:]

W = np.zeros((8, 3))
b = np.zeros(3)


def forward(x):
    z = x @ W + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


best_val = float("inf")
with flor.checkpointing(W=W, b=b):
    for epoch in flor.loop("epoch", range(epochs)):
        order = rng.permutation(len(X_train))
        for step in flor.loop("step", range(len(X_train) // batch)):
            idx = order[step * batch : (step + 1) * batch]
            p = forward(X_train[idx])
            onehot = np.eye(3)[y_train[idx]]
            loss = -np.log(p[np.arange(len(idx)), y_train[idx]] + 1e-12).mean()
            grad = (p - onehot) / len(idx)
            W -= lr * X_train[idx].T @ grad
            b -= lr * grad.sum(axis=0)
            flor.log("loss", loss)
        p_val = forward(X_val)
        val_loss = -np.log(p_val[np.arange(len(X_val)), y_val] + 1e-12).mean()
        flor.log("val_acc", (p_val.argmax(axis=1) == y_val).mean())
        if val_loss > best_val:
            lr /= 4.0
        best_val = min(best_val, val_loss)

np.save("model.npy", np.concatenate([W.ravel(), b]))
