"""Drop-in layers that give fastvision's operators the API of other libraries.

* :mod:`fastvision.compat.pytorch3d`: PyTorch3D's ``knn_points``, ``knn_gather``,
  ``chamfer_distance`` and ``sample_farthest_points`` with PyTorch3D's signatures, return types
  and conventions (switch with one import line).
* :mod:`fastvision.compat.torch_cluster`: torch_cluster's ``knn``, ``knn_graph`` and ``fps`` with
  its signatures, ``[2, E]`` edge layout and ``batch`` / ``ptr`` conventions (for PyG users).

The submodules are imported on demand (``from fastvision.compat.pytorch3d import knn_points``).
"""

__all__ = ["pytorch3d", "torch_cluster"]
