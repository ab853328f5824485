"""Every key of the video input pipeline, with PySlowFast's MViT Kinetics values as defaults.

The trainer embeds this as `config.data`; the sources, decoder, sampler, augmentations and grain loaders read
their settings from it and from nothing else.
"""
import ml_collections

AVA_TEST_VIEWS = ('center', 'full')  # data.ava_test_view's values.


def default_data_config() -> ml_collections.ConfigDict:
  """Returns the data config (MViT-B 16x4 Kinetics recipe; SlowFast key names in comments)."""
  c = ml_collections.ConfigDict()

  # --- Source -----------------------------------------------------------------------------------------------
  c.dataset_kind = 'manifest'      # 'manifest' (video files) | 'frames' (folders of JPEG frames) | 'tfds'
                                   # | 'folder' (root/<class>/<video>, mvit_jax.data.folder)
                                   # | 'prepared' (JPEG-frame ArrayRecord shards, mvit_jax.data.prepare)
                                   # | 'dmvr' (DMVR / Scenic TFRecords of tf.train.SequenceExample)
                                   # | 'ava' (AVA action detection: boxes, frames or videos; mvit_jax.data.ava).
  c.root = ''                      # Manifest paths are relative to this folder (DATA.PATH_PREFIX); 'folder' kind:
                                   # the folder of class folders (or of train/ and val/ holding them).
  c.folder_val_fraction = 0.1      # 'folder' kind without train/ and val/: fraction of each class's videos that
                                   # goes to eval (rounded; at least 1 of a class with >= 2 videos).
  c.folder_split_seed = 0          # 'folder' kind: seed of that split.
  c.train_manifest = ''            # `path label` per line, split on the last whitespace (train.csv).
  c.eval_manifest = ''             # Same format (val.csv / test.csv).
  c.classes_file = ''              # Optional: one class name per line; line i names label i.
  c.num_classes = 0                # 0: the class folders ('folder' kind), else from classes_file, else 1 + the
                                   # largest label in the train manifest.
  c.multi_label = False            # Labels are comma-separated ints -> float32 multi-hot (B, C) (Charades).
  c.frame_glob = '*.jpg'           # 'frames' kind: frame files inside each video folder, sorted by name.
  c.frames_fps = 30.0              # 'frames' and 'tfds' kinds: frame rate the frames were extracted at.
  c.tfds_name = ''                 # 'tfds' kind: dataset name, e.g. 'ucf101'.
  c.tfds_data_dir = ''             # 'tfds' kind: where it was prepared ('' = TFDS default).
  c.tfds_train_split = 'train'
  c.tfds_eval_split = 'test'
  c.tfds_video_key = 'video'       # Feature holding the (N, H, W, 3) uint8 frames.
  c.tfds_label_key = 'label'
  c.train_shards = ''              # 'prepared': the folder `prepare --out` wrote; 'dmvr': a file pattern (glob) of
  c.eval_shards = ''               # TFRecord files. Local or gs://. Frame rate: from the shards ('prepared'),
                                   # frames_fps ('dmvr').
  c.dmvr_image_key = 'image/encoded'     # 'dmvr' kind: feature list of JPEG-encoded frames.
  c.dmvr_label_key = 'clip/label/index'  # 'dmvr' kind: context int64 feature with the class index (or indices).
  # 'ava' kind (action detection, mvit_jax.data.ava; PySlowFast AVA.* names in comments). Clips are read from frame
  # folders (ava_frame_dir + frame lists) or from video files (ava_video_dir), exactly one of the two.
  c.ava_frame_dir = ''             # AVA.FRAME_DIR: frame list paths are relative to it.
  c.ava_frame_list_dir = ''        # AVA.FRAME_LIST_DIR: the frame lists below are relative to it.
  c.ava_frame_list_train = 'train.csv'  # AVA.TRAIN_LISTS: `original_vido_id video_id frame_id path labels` rows.
  c.ava_frame_list_val = 'val.csv'      # AVA.TEST_LISTS.
  c.ava_video_dir = ''             # {ava_video_dir}/{video}.mp4|.mkv|.webm, instead of frames.
  c.ava_annotation_dir = ''        # AVA.ANNOTATION_DIR: the files below are relative to it (URLs and absolute
                                   # paths are kept; '' turns an optional file off).
  c.ava_train_gt_boxes = 'ava_train_v2.2.csv'  # AVA.TRAIN_GT_BOX_LISTS: `video,sec,x1,y1,x2,y2,action,person`.
  c.ava_train_proposals = ('person_box_67091280_iou90/'  # AVA.TRAIN_PREDICT_BOX_LISTS: detector boxes labelled
                           'ava_detection_train_boxes_and_labels_include_negative_v2.2.csv')  # by IoU > 0.9.
  c.ava_val_detections = 'person_box_67091280_iou90/ava_detection_val_boxes_and_labels.csv'  # TEST_PREDICT_BOX_LISTS.
  c.ava_val_gt = 'ava_val_v2.2.csv'  # AVA.GROUNDTRUTH_FILE (the evaluation's ground truth).
  c.ava_label_map = 'ava_action_list_v2.2_for_activitynet_2019.pbtxt'  # AVA.LABEL_MAP_FILE: classes scored.
  c.ava_exclusions = 'ava_val_excluded_timestamps_v2.2.csv'  # AVA.EXCLUSION_FILE: keyframes the scorer skips.
  c.ava_detection_score_thresh = 0.8  # AVA.DETECTION_SCORE_THRESH (AVA configs): proposals and test boxes kept.
  c.ava_max_boxes = 32             # N boxes per clip (padded and masked; more: the first N kept, counted).
  c.ava_test_view = 'center'       # 'center': short side to crop_size, centre crop (PySlowFast 'val'); 'full':
                                   # short side to crop_size, whole frame (PySlowFast 'test'; batches of one video).
  c.ava_fps = 30.0                 # Frame rate of the frame folders (ava_helper.FPS).
  c.ava_frame_start_sec = 900      # AVA second of a frame folder's first frame (frames cut from 900 s).
  c.ava_video_start_sec = 900      # AVA second at time 0 of a video file: 900 for the 15-minute cuts, 0 for the
                                   # original full-length AVA videos.
  c.ava_valid_secs = (902, 1798)   # First and last keyframe second used (ava_helper.AVA_VALID_FRAMES).

  # --- Temporal sampling (decoder.py) -----------------------------------------------------------------------
  c.num_frames = 16                # T (DATA.NUM_FRAMES).
  c.sampling_rate = 4              # tau, in frames at target_fps (DATA.SAMPLING_RATE).
  c.target_fps = 30.0              # DATA.TARGET_FPS.
  c.segment_sampling = False       # SSv2-style: one frame per T equal segments (random in train, middle in test).
  c.test_num_clips = 5             # K temporal views (TEST.NUM_ENSEMBLE_VIEWS).
  c.test_num_crops = 1             # S spatial views, 1 (centre) or 3 (TEST.NUM_SPATIAL_CROPS).
  c.use_offset_sampling = True     # Test clips from first to last possible start (DATA.USE_OFFSET_SAMPLING).

  # --- Decoding -----------------------------------------------------------------------------------------------
  # Training frames are resized once, by the augmentation, from native frames (PySlowFast). A decode-time size
  # only saves CPU on large videos and may not go below what the augmentation samples: 0 (native) with
  # random-resized crops, 0 or >= max(train_jitter_scales) with short-side jitter (checked with the config).
  c.train_short_side = 0
  c.test_short_side = 256          # One-crop test views: short side (decode-time resize), then the centre crop;
                                   # three-crop views are cut from a short side of crop_size.
  c.decode_threads = 1             # PyAV codec threads per decode (keep 1 when using several workers).

  # --- Augmentation (transforms.py) ------------------------------------------------------------------------
  c.crop_size = 224                # DATA.TRAIN_CROP_SIZE / TEST_CROP_SIZE.
  c.random_resized_crop = True     # Inception-style crop (TRAIN_JITTER_SCALES_RELATIVE given); else jitter + crop.
  c.rrc_area = (0.08, 1.0)         # DATA.TRAIN_JITTER_SCALES_RELATIVE.
  c.rrc_aspect = (0.75, 1.3333)    # DATA.TRAIN_JITTER_ASPECT_RELATIVE.
  c.train_jitter_scales = (256, 320)  # DATA.TRAIN_JITTER_SCALES: short-side range when not using RRC.
  c.inverse_uniform_sampling = False  # DATA.INV_UNIFORM_SAMPLE: sample 1/scale uniformly (SSv2 configs).
  c.random_flip = True             # DATA.RANDOM_FLIP (False for SSv2).
  c.randaugment = True             # AUG.AA_TYPE rand-m7-n4-mstd0.5-inc1, same ops on every frame of a clip.
  c.randaugment_num_layers = 4
  c.randaugment_magnitude = 7
  c.randaugment_mstd = 0.5
  c.randaugment_interpolation = 'bicubic'
  # The loaders yield uint8 clips after RandAugment, crop and flip; normalisation and random erasing run on the
  # accelerator (`mvit_jax.data.device_preprocess.preprocess_on_device`, called by the train and eval steps).
  c.random_erasing_prob = 0.25     # AUG.RE_PROB, one box shared by all frames (cube).
  c.mean = (0.45, 0.45, 0.45)      # DATA.MEAN, on [0, 1] pixels.
  c.std = (0.225, 0.225, 0.225)    # DATA.STD.
  c.num_repeated_samples = 2       # AUG.NUM_SAMPLE: augmented copies per decoded video, flattened into the batch.

  # On-device batch transforms (applied by the trainer, not by the loader).
  c.mixup_alpha = 0.8              # MIXUP.ALPHA.
  c.cutmix_alpha = 1.0             # MIXUP.CUTMIX_ALPHA.
  c.mixup_switch_prob = 0.5        # MIXUP.SWITCH_PROB.
  c.mixup_prob = 1.0               # MIXUP.PROB.
  c.label_smoothing = 0.1          # MIXUP.LABEL_SMOOTH_VALUE.

  # --- Loader -------------------------------------------------------------------------------------------------
  c.loader = 'grain'               # 'grain' | 'dali': training clips of video files decoded by NVIDIA DALI
                                   # (mvit_jax.data.dali_loader; dataset_kind 'manifest', no RandAugment; evaluation
                                   # always uses grain).
  c.dali_device = 'mixed'          # 'mixed' (GPU decode: H.264, HEVC, AV1, VP8/9, MPEG-4, MJPEG) | 'cpu' (VP8, VP9
                                   # and MJPEG only).
  # grain (with loader='dali', num_workers is DALI's CPU thread count and read_threads read the files ahead):
  c.num_workers = 2                # grain worker processes; 0 decodes in the main process.
  c.worker_buffer_size = 2         # Batches each worker prepares ahead.
  c.read_threads = 1               # Threads per worker that build batches ahead (from a bucket: at least
                                   # read_prefetch, which fetch training batches' videos for the worker to decode).
  c.read_prefetch = 4              # Batches those threads keep ready (decoded clips use lots of memory).
  c.max_failure_fraction = 0.01    # Stop when more than this fraction of the (local) videos failed to decode.
  c.max_replacement_attempts = 10  # A bad video is replaced by up to this many other videos, then it raises.
  return c
