"""At the site: local threshold calibration, site operating points, upgrade guard, monitoring."""
