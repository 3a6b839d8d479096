"""Without the compiled extension the package imports, warns once, and runs on `reference`."""

import subprocess
import sys
import textwrap


def test_missing_extension_warns_once_and_falls_back_to_reference():
    script = textwrap.dedent(
        """
        import sys, warnings
        sys.modules["dsconv_ext._C"] = None          # makes `from . import _C` raise ImportError
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch, torch.nn.functional as F
            import dsconv_ext
            x, w = torch.randn(2, 4, 9, 9), torch.randn(4, 1, 3, 3)
            y = dsconv_ext.depthwise_conv2d(x, w, padding=1)
            z = dsconv_ext.depthwise_conv2d(x, w, padding=1, backend="cpu")
        native = [c for c in caught if "compiled extension" in str(c.message)]
        fallback = [c for c in caught if "falling back" in str(c.message)]
        print(dsconv_ext.available_backends(), len(native), len(fallback))
        assert torch.allclose(y, F.conv2d(x, w, padding=1, groups=4), atol=1e-5)
        assert torch.equal(y, z)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0].strip() == "['reference'] 1 1"
