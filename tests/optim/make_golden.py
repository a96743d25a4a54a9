# Golden values for tests/optim/test_optim.cpp from torch.optim and torch.nn.utils.clip_grad_norm_.
# Run: /usr/bin/python3 tests/optim/make_golden.py   (prints C++ initialiser lists to paste in the test)
#
# The problem: loss = mean((x @ W + b - y)^2), W [3, 2], b [2], in float64; STEPS optimizer steps,
# each after zero_grad() and a fresh backward. The test rebuilds the same problem with latent.
import torch

torch.set_default_dtype(torch.float64)
STEPS = 5
X = [[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 1.1], [0.9, -1.4, 0.4]]
Y = [[1.0, -0.5], [0.2, 0.7], [-1.2, 0.4], [0.6, 0.0]]
W0 = [[0.1, -0.2], [0.3, 0.05], [-0.4, 0.25]]
B0 = [0.05, -0.1]


def problem():
    w = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(B0, requires_grad=True)
    return w, b


def loss_of(w, b):
    return ((torch.tensor(X) @ w + b - torch.tensor(Y)) ** 2).mean()


def run(make_optimizer, steps=STEPS):
    w, b = problem()
    opt = make_optimizer(w, b)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_of(w, b).backward()
        opt.step()
    return w.detach().flatten().tolist() + b.detach().tolist()


def show(name, values):
    print(f"// {name}")
    print("{" + ", ".join(f"{v:.17g}" for v in values) + "}")


show("SGD lr=0.1 momentum=0.9 nesterov weight_decay=0.01",
     run(lambda w, b: torch.optim.SGD([w, b], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)))
show("SGD lr=0.1 momentum=0.9 dampening=0.1 weight_decay=0.01",
     run(lambda w, b: torch.optim.SGD([w, b], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)))
show("Adam lr=0.01 betas=(0.9, 0.999) eps=1e-8 weight_decay=0.1",
     run(lambda w, b: torch.optim.Adam([w, b], lr=0.01, weight_decay=0.1)))
show("AdamW lr=0.01 betas=(0.9, 0.999) eps=1e-8 weight_decay=0.1",
     run(lambda w, b: torch.optim.AdamW([w, b], lr=0.01, weight_decay=0.1)))
show("AdamW groups: W lr=0.01 weight_decay=0.1, b lr=0.05 weight_decay=0, betas=(0.8, 0.99) eps=1e-6",
     run(lambda w, b: torch.optim.AdamW([{"params": [w], "lr": 0.01, "weight_decay": 0.1},
                                          {"params": [b], "lr": 0.05, "weight_decay": 0.0}],
                                         betas=(0.8, 0.99), eps=1e-6)))

# clip_grad_norm_ on the gradients at the starting point.
w, b = problem()
loss_of(w, b).backward()
norm = torch.nn.utils.clip_grad_norm_([w, b], max_norm=1.0)
print(f"// clip_grad_norm_ max_norm=1.0: total norm {norm.item():.17g}; clipped gradients")
show("clipped W.grad, b.grad", w.grad.flatten().tolist() + b.grad.tolist())
