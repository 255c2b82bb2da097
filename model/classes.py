"""The land-cover classes of the generated texture-mosaic dataset.

One list, shared by the generator, training, evaluation and the exported
card, so that a class id means the same thing everywhere.
"""
import dataclasses

IGNORE_LABEL = 255


@dataclasses.dataclass(frozen=True)
class SegmentationClass:
    """A class id, its human name and the colour used to draw it in masks."""

    id: int
    name: str
    color: tuple

    def to_json(self):
        return {"id": self.id, "name": self.name, "color": list(self.color)}


CLASSES = (
    SegmentationClass(0, "water", (40, 90, 200)),
    SegmentationClass(1, "vegetation", (60, 160, 60)),
    SegmentationClass(2, "bare_ground", (170, 140, 100)),
    SegmentationClass(3, "building", (200, 60, 50)),
    SegmentationClass(4, "road", (110, 110, 110)),
)

CLASS_NAMES = tuple(segmentation_class.name for segmentation_class in CLASSES)
NUM_CLASSES = len(CLASSES)


def classes_to_json(classes=CLASSES):
    return [segmentation_class.to_json() for segmentation_class in classes]


def classes_from_json(entries):
    """Rebuild the class list from a card or dataset.json, checking ids are 0..n-1."""
    classes = []
    for index, entry in enumerate(entries):
        if int(entry["id"]) != index:
            raise ValueError(f"class ids must be 0..n-1 in order; entry {index} has id {entry['id']}")
        classes.append(SegmentationClass(index, str(entry["name"]), tuple(int(c) for c in entry["color"])))
    return tuple(classes)
