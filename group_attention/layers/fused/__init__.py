"""The layers' fast paths, for plain eager mode: autograd Functions with hand-written backwards (one module per
layer, built from :mod:`.common`) and Triton kernels for CUDA (:mod:`.triton`, one module per layer).

Each computes its layer's readable functional form exactly (tests compare them with it and with float64
references); :mod:`group_attention.layers.dispatch` decides when they run.
"""
