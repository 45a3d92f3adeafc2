"""The interpreters: the traces that transform a program while it runs (forward mode, reverse
mode, batching) and their jaxpr-level entry points (`jvp_jaxpr`, `vjp_jaxpr`, `vjp_recompute`,
`batch_jaxpr`, `batch_fun`).

They sit below the primitives (funcgrad/lax), as JAX's interpreters do. A trace needs no primitive
by name: it calls the rules each primitive carries (`prim.jvp`, `prim.vjp`, `prim.batch`, and the
optional `grad_rule` / `jvp_with_primal` hooks), so the higher-order primitives (control flow,
remat, custom derivative rules, collectives) transform their sub-programs by calling down into
this package instead of importing the transforms above them. The few array operations the
interpreters perform on their own behalf (adding cotangents, making zeros, moving a batch axis)
are primitives that funcgrad.lax registers in `ops` when it is imported. The public wrappers
(fg.grad, fg.jvp, fg.vmap, ...) are in funcgrad/transforms.
"""
