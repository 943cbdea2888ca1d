"""The conformance kit for plugin authors: :func:`check_adapter`, :func:`check_plugin` and
:func:`adapter_names_for_tests` (see :mod:`zoo_core.backbones.conformance`).

```python
from zoo_core.testing import check_adapter

def test_my_adapter():
    check_adapter(MyAdapter(), "my_net")   # or check_adapter("my_net") once the plugin is installed
```
"""

from __future__ import annotations

from .backbones.conformance import adapter_names_for_tests, check_adapter, check_plugin

__all__ = ["adapter_names_for_tests", "check_adapter", "check_plugin"]
