"""A folder of the user's own scans as the dataset a student learns from (``recokd distill --images``).

The scans (labels optional) are checked against the teacher before anything is written
(:mod:`.checks`), preprocessed once with the teacher's own plans by nnU-Net's preprocessor,
and every unlabeled scan gets the teacher's labels as its training target
(:mod:`.teacher_labels`); :mod:`.dataset` keeps the result as an nnU-Net preprocessed dataset
with a manifest, so a second run or a resume predicts nothing again.
"""
