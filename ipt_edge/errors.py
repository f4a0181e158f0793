"""The error for a bundle the runtime cannot use, shared by the manifest and graph-contract checks."""


class BundleError(ValueError):
    """A bundle that cannot be used as it is; the message names the file or field."""
