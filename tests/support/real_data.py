"""The real data in ../shared/data (see its README): a real ImageNet classifier and real product photos.

Never copied into the repository. Tests that need it skip, naming the folder, where it is absent (a user's clone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.grocery import ABO, GROCERY, MOBILENET, SHARED_DATA

__all__ = ["ABO", "GROCERY", "MOBILENET", "SENSIBLE_TOP1", "SHARED_DATA", "real_photos", "require"]

MUSHROOMS = {"mushroom", "agaric", "bolete"}
# Written down after looking at each photo, before any model saw it: the ImageNet classes a sensible top-1 is
# among (ImageNet has no light bulb, duffel bag or vitamin jar class; the nearest ones are listed).
SENSIBLE_TOP1 = {
    "abo-product-samples/samples/B074M5HPBD/dcace9b5.jpg": {"spotlight", "lampshade"},  # one GU10 LED bulb
    "abo-product-samples/samples/B0799CK52K/528c608a.jpg": {"mailbag", "purse", "backpack"},  # grey gym duffel
    "abo-product-samples/samples/B0799CK52K/d80a51d3.jpg": {"mailbag", "purse", "backpack"},  # same, strap out
    "abo-product-samples/samples/B07GTFSCHB/844a1cce.jpg": {"pill bottle", "lotion"},  # a jar of vitamin capsules
    "grocery-store-dataset/val/Fruit/Banana/Banana_001.jpg": {"banana"},
    "grocery-store-dataset/val/Fruit/Banana/Banana_002.jpg": {"banana"},
    "grocery-store-dataset/val/Vegetables/Pepper/Red-Bell-Pepper/Red-Bell-Pepper_001.jpg": {"bell pepper"},
    "grocery-store-dataset/val/Vegetables/Pepper/Red-Bell-Pepper/Red-Bell-Pepper_002.jpg": {"bell pepper"},
    "grocery-store-dataset/val/Vegetables/Pepper/Yellow-Bell-Pepper/Yellow-Bell-Pepper_001.jpg": {"bell pepper"},
    "grocery-store-dataset/val/Vegetables/Pepper/Yellow-Bell-Pepper/Yellow-Bell-Pepper_002.jpg": {"bell pepper"},
    "grocery-store-dataset/val/Fruit/Lemon/Lemon_001.jpg": {"lemon"},
    "grocery-store-dataset/val/Fruit/Lemon/Lemon_002.jpg": {"lemon"},
    "grocery-store-dataset/val/Fruit/Pineapple/Pineapple_001.jpg": {"pineapple"},
    "grocery-store-dataset/val/Fruit/Pineapple/Pineapple_002.jpg": {"pineapple"},
    "grocery-store-dataset/val/Fruit/Pomegranate/Pomegranate_001.jpg": {"pomegranate"},
    "grocery-store-dataset/val/Fruit/Pomegranate/Pomegranate_002.jpg": {"pomegranate"},
    "grocery-store-dataset/val/Fruit/Orange/Orange_001.jpg": {"orange"},
    "grocery-store-dataset/val/Fruit/Orange/Orange_002.jpg": {"orange"},
    "grocery-store-dataset/val/Vegetables/Brown-Cap-Mushroom/Brown-Cap-Mushroom_001.jpg": MUSHROOMS,
    "grocery-store-dataset/val/Vegetables/Brown-Cap-Mushroom/Brown-Cap-Mushroom_002.jpg": MUSHROOMS,
    "grocery-store-dataset/val/Vegetables/Cucumber/Cucumber_001.jpg": {"cucumber", "zucchini"},
    "grocery-store-dataset/val/Vegetables/Cucumber/Cucumber_002.jpg": {"cucumber", "zucchini"},
    "grocery-store-dataset/val/Vegetables/Zucchini/Zucchini_001.jpg": {"zucchini", "cucumber"},
    "grocery-store-dataset/val/Vegetables/Zucchini/Zucchini_002.jpg": {"zucchini", "cucumber"},
    "grocery-store-dataset/val/Fruit/Apple/Granny-Smith/Granny-Smith_001.jpg": {"Granny Smith"},
    "grocery-store-dataset/val/Fruit/Apple/Granny-Smith/Granny-Smith_002.jpg": {"Granny Smith"},
    "grocery-store-dataset/val/Vegetables/Cabbage/Cabbage_001.jpg": {"head cabbage"},
    "grocery-store-dataset/val/Vegetables/Cabbage/Cabbage_002.jpg": {"head cabbage"},
}


def require(path: Path) -> Path:
    """``path``, or a skip that names the folder the test reads."""
    if not path.exists():
        pytest.skip(f"needs the real data in {SHARED_DATA} ({path.relative_to(SHARED_DATA)}), absent here; "
                    "see ../shared/data/README.md")
    return path


def real_photos() -> list[Path]:
    """Every photo of :data:`SENSIBLE_TOP1`, in its order."""
    return [require(SHARED_DATA / relative) for relative in SENSIBLE_TOP1]
