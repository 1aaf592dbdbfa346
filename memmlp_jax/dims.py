"""The model's input and output sizes per frame (docs/design.md §1).

The one home of these numbers: the data pipeline, the models, the rollout and
the export all read them from here.
"""

# Sparse input: head, left wrist, right wrist x (6D rotation, 6D rotation
# velocity, position, position delta) = 3 x (6 + 6 + 3 + 3).
SPARSE_DIM = 54
# Output: the 22 joints' local rotations as 6D, and their global positions.
NUM_JOINTS = 22
ROT6D_DIM = NUM_JOINTS * 6  # 132
POS_DIM = NUM_JOINTS * 3  # 66
# One frame of full-body motion (what the memory block remembers).
MOTION_DIM = ROT6D_DIM + POS_DIM  # 198
# The head's world position in a (..., POS_DIM) frame (joint 15).
HEAD_JOINT = 15
HEAD_POS_COLUMNS = slice(3 * HEAD_JOINT, 3 * HEAD_JOINT + 3)
