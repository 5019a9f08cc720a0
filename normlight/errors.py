"""Exceptions raised by normlight. Each message names the thing at fault and what to do about it."""


class NormlightError(Exception):
    """Base class of every error normlight raises on purpose."""


class PluginError(NormlightError):
    """A plugin could not be loaded, or what it built violates the plugin contract."""


class UnknownNameError(NormlightError, LookupError):
    """A norm, placement or model name that is not registered."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class AmbiguousNameError(UnknownNameError):
    """Two distributions register the same name; `distribution:name` selects one."""


class PluginOptionError(NormlightError, TypeError):
    """An option that the selected plugin does not accept, or rejects."""


class CheckpointError(NormlightError):
    """A pretrained checkpoint that cannot be read, mapped or exported exactly (names the source and the keys)."""
