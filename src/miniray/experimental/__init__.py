"""Ray's ``ray.experimental`` names that miniray provides (internal_kv, tqdm_ray)."""
