"""ACE++ core: pure torch/numpy/PIL logic (canvas, masks, geometry, state-dict inspection).

Never imports ComfyUI, so every function here is testable anywhere.
"""
