"""An independent reference ("oracle") of the BaS-Net release, for the tests of the JAX port.

Release: Pilhyeon/BaSNet-pytorch, as SPEC.md §8 states it (model.py with sort-and-slice top-k,
utils.py with the ReLU'd, delta-guarded minmax_norm). Each function below ports one function of the
release and names it; the code stays as close to the release's as it can (its loops, its in-place
binarisation, its dict insertion order, its variable names) so that it shares nothing with a
vectorised port. Only what would need a GPU or a data loader is left out (``.cuda()``, the
DataLoader, the evaluator, file writing).

This is a test-support module, not a test file: it defines no ``test_`` functions. Torch and SciPy
are imported (or passed in) inside the functions that need them, so that importing this module
needs NumPy only.

Precision: the release ran NumPy 1.14, where ``0.2 * np.float32(1.0)`` is a float64 0.2; NumPy >= 2
(NEP 50) keeps it float32 (0.20000000298...). ``release_proposal_oic`` converts that factor to a
Python float so the scores are the release's under either NumPy.
"""

import numpy as np

# config.py: class_dict, in its index order (SPEC §1).
THUMOS14_CLASSES = (
    'BaseballPitch', 'BasketballDunk', 'Billiards', 'CleanAndJerk', 'CliffDiving',
    'CricketBowling', 'CricketShot', 'Diving', 'FrisbeeCatch', 'GolfSwing', 'HammerThrow',
    'HighJump', 'JavelinThrow', 'LongJump', 'PoleVault', 'Shotput', 'SoccerPenalty',
    'TennisSwing', 'ThrowDiscus', 'VolleyballSpiking')

# config.py: Config.act_thresh (10 values, 0 ... 0.225); never mutated here.
ACT_THRESH = np.arange(0.0, 0.25, 0.025)


class ReleaseCrash(Exception):
    """Where the release raises IndexError (test.py: ``proposals[i][0][0]`` of an empty list).

    ``class_index`` is the class (index into the class list) that has no proposal at threshold
    ``threshold``; the release stops the whole test() (and the training run) there.
    """

    def __init__(self, class_index, threshold):
        super().__init__(f'release would raise IndexError: class {class_index} has no proposal '
                         f'at act_thresh {threshold}')
        self.class_index = class_index
        self.threshold = threshold


# ---------------------------------------------------------------------------------------------
# model.py, train.py (torch)

def release_model(torch, *, feature_dim, num_classes, num_segments):
    """model.py: BaS_Net(len_feature, num_classes, num_segments), PyTorch default init.

    ``torch`` is the torch module (optional dependency: callers use pytest.importorskip). The
    state-dict keys are the release's: filter_module.conv_{1,2}.0.{weight,bias},
    cas_module.conv_{1,2}.0.{weight,bias}, cas_module.conv_3.0.weight. forward(x) takes x of shape
    (B, T, D) and returns (score_base (B, C+1), cas_base (B, T, C+1), score_supp (B, C+1),
    cas_supp (B, T, C+1), fore_weights (B, T, 1)).
    """
    nn = torch.nn

    class Filter_Module(nn.Module):
        def __init__(self, len_feature):
            super(Filter_Module, self).__init__()
            self.len_feature = len_feature
            self.conv_1 = nn.Sequential(
                nn.Conv1d(in_channels=self.len_feature, out_channels=512, kernel_size=1,
                          stride=1, padding=0),
                nn.LeakyReLU()
            )
            self.conv_2 = nn.Sequential(
                nn.Conv1d(in_channels=512, out_channels=1, kernel_size=1,
                          stride=1, padding=0),
                nn.Sigmoid()
            )

        def forward(self, x):
            out = x.permute(0, 2, 1)
            out = self.conv_1(out)
            out = self.conv_2(out)
            out = out.permute(0, 2, 1)
            return out

    class CAS_Module(nn.Module):
        def __init__(self, len_feature, num_classes):
            super(CAS_Module, self).__init__()
            self.len_feature = len_feature
            self.conv_1 = nn.Sequential(
                nn.Conv1d(in_channels=self.len_feature, out_channels=2048, kernel_size=3,
                          stride=1, padding=1),
                nn.LeakyReLU()
            )
            self.conv_2 = nn.Sequential(
                nn.Conv1d(in_channels=2048, out_channels=2048, kernel_size=3,
                          stride=1, padding=1),
                nn.LeakyReLU()
            )
            self.conv_3 = nn.Sequential(
                nn.Conv1d(in_channels=2048, out_channels=num_classes + 1, kernel_size=1,
                          stride=1, padding=0, bias=False)
            )
            self.drop_out = nn.Dropout(p=0.7)

        def forward(self, x):
            out = x.permute(0, 2, 1)
            out = self.conv_1(out)
            out = self.conv_2(out)
            out = self.drop_out(out)
            out = self.conv_3(out)
            out = out.permute(0, 2, 1)
            return out

    class BaS_Net(nn.Module):
        def __init__(self, len_feature, num_classes, num_segments):
            super(BaS_Net, self).__init__()
            self.filter_module = Filter_Module(len_feature)
            self.len_feature = len_feature
            self.num_classes = num_classes
            self.cas_module = CAS_Module(len_feature, num_classes)
            self.softmax = nn.Softmax(dim=1)
            self.num_segments = num_segments
            self.k = num_segments // 8

        def forward(self, x):
            fore_weights = self.filter_module(x)
            x_supp = fore_weights * x
            cas_base = self.cas_module(x)
            cas_supp = self.cas_module(x_supp)
            # the release's sort + slice (not topk): an input shorter than k averages all of it
            sorted_scores_base, _ = cas_base.sort(descending=True, dim=1)
            topk_scores_base = sorted_scores_base[:, :self.k, :]
            score_base = torch.mean(topk_scores_base, dim=1)
            sorted_scores_supp, _ = cas_supp.sort(descending=True, dim=1)
            topk_scores_supp = sorted_scores_supp[:, :self.k, :]
            score_supp = torch.mean(topk_scores_supp, dim=1)
            score_base = self.softmax(score_base)
            score_supp = self.softmax(score_supp)
            return score_base, cas_base, score_supp, cas_supp, fore_weights

    return BaS_Net(feature_dim, num_classes, num_segments)


def release_loss(torch, outputs, labels, alpha):
    """train.py: BaS_Net_loss(alpha).forward, without the ``.cuda()`` calls.

    outputs: the model's 5-tuple (score_base (B, C+1), _, score_supp (B, C+1), _,
    fore_weights (B, T, 1)); labels: float tensor (B, C), multi-hot. Returns
    (loss_total, {'loss_base', 'loss_supp', 'loss_norm', 'loss_total'}), scalar tensors.
    """
    score_base, _, score_supp, _, fore_weights = outputs
    label = labels
    ce_criterion = torch.nn.BCELoss()
    loss = {}
    label_base = torch.cat((label, torch.ones((label.shape[0], 1), dtype=label.dtype)), dim=1)
    label_supp = torch.cat((label, torch.zeros((label.shape[0], 1), dtype=label.dtype)), dim=1)
    label_base = label_base / torch.sum(label_base, dim=1, keepdim=True)
    label_supp = label_supp / torch.sum(label_supp, dim=1, keepdim=True)
    loss_base = ce_criterion(score_base, label_base)
    loss_supp = ce_criterion(score_supp, label_supp)
    loss_norm = torch.mean(torch.norm(fore_weights, p=1, dim=1))
    loss_total = loss_base + loss_supp + alpha * loss_norm
    loss['loss_base'] = loss_base
    loss['loss_supp'] = loss_supp
    loss['loss_norm'] = loss_norm
    loss['loss_total'] = loss_total
    return loss_total, loss


# ---------------------------------------------------------------------------------------------
# thumos_features.py

def release_sample_test(n, T):
    """thumos_features.py: ThumosFeature.uniform_sampling(length=n) with num_segments=T.

    Always T indices (int array, shape (T,)), also when n < T (segments repeat).
    """
    if T == n:
        return np.arange(T).astype(int)
    samples = np.arange(T) * n / T
    samples = np.floor(samples)
    return samples.astype(int)


# ---------------------------------------------------------------------------------------------
# utils.py (NumPy; the release's minmax_norm is torch, ported to NumPy op for op)

def release_minmax_norm(act_map):
    """utils.py: minmax_norm, on a NumPy array of shape (1, T, K) (the release's batch of 1).

    max/min over time, each through ReLU; delta <= 0 -> 1; NOT clipped. Keeps the input dtype
    (float32 as the release's tensors; element-wise IEEE ops give torch's values). The release
    relies on B = 1: (1, T, K) - (1, K) broadcasts over time only then.
    """
    max_val = np.maximum(np.max(act_map, axis=1), 0)
    min_val = np.maximum(np.min(act_map, axis=1), 0)
    delta = max_val - min_val
    delta[delta <= 0] = 1
    ret = (act_map - min_val) / delta
    return ret


def release_upgrade_resolution(arr, scale):
    """utils.py: upgrade_resolution. arr (T, ...) -> (len(arange(0, T, 1/scale)), ...).

    SciPy interp1d, linear, extrapolating past the last point (T = 750, scale 24: 18000 points,
    the last 23 extrapolated).
    """
    from scipy.interpolate import interp1d
    x = np.arange(0, arr.shape[0])
    f = interp1d(x, arr, kind='linear', axis=0, fill_value='extrapolate')
    scale_x = np.arange(0, arr.shape[0], 1 / scale)
    up_scale = f(scale_x)
    return up_scale


def release_grouping(arr):
    """utils.py: grouping. Sorted int array -> list of runs of consecutive values."""
    return np.split(arr, np.where(np.diff(arr) != 1)[0] + 1)


def release_proposal_oic(tList, wtcam, final_score, c_pred, scale, v_len, sampling_frames,
                         num_segments, lambda_=0.25, gamma=0.2):
    """utils.py: get_proposal_oic.

    tList: per localised class i, the ``np.where`` tuple of its candidate positions; wtcam
    (P, len(c_pred), 1), the thresholded upsampled scores; final_score (C,), the binarised video
    scores; c_pred: the localised class indices. Returns one list per localised class (empty when
    its candidates have no non-zero index: ``temp_list.any()``), of [class, score, start_s, end_s].
    """
    t_factor = (16 * v_len) / (scale * num_segments * sampling_frames)
    temp = []
    for i in range(len(tList)):
        c_temp = []
        temp_list = np.array(tList[i])[0]
        if temp_list.any():
            grouped_temp_list = release_grouping(temp_list)
            for j in range(len(grouped_temp_list)):
                inner_score = np.mean(wtcam[grouped_temp_list[j], i, 0])

                len_proposal = len(grouped_temp_list[j])
                outer_s = max(0, int(grouped_temp_list[j][0] - lambda_ * len_proposal))
                outer_e = min(int(wtcam.shape[0] - 1),
                              int(grouped_temp_list[j][-1] + lambda_ * len_proposal))

                outer_temp_list = (list(range(outer_s, int(grouped_temp_list[j][0])))
                                   + list(range(int(grouped_temp_list[j][-1] + 1), outer_e + 1)))

                if len(outer_temp_list) == 0:
                    outer_score = 0
                else:
                    outer_score = np.mean(wtcam[outer_temp_list, i, 0])

                # float(): NumPy 1.x's float64 0.2 (see the module docstring)
                c_score = inner_score - outer_score + gamma * float(final_score[c_pred[i]])
                t_start = grouped_temp_list[j][0] * t_factor
                t_end = (grouped_temp_list[j][-1] + 1) * t_factor
                c_temp.append([c_pred[i], c_score, t_start, t_end])
        temp.append(c_temp)
    return temp


def release_nms(proposals, thresh):
    """utils.py: nms. proposals: list of [class, score, start, end]; IoU with the "+1" convention.

    Returns the kept rows as lists of Python floats (class too: 3 -> 3.0), in descending score
    order (NumPy's default, unstable argsort, reversed); drops IoU >= thresh.
    """
    proposals = np.array(proposals)
    x1 = proposals[:, 2]
    x2 = proposals[:, 3]
    scores = proposals[:, 1]

    areas = x2 - x1 + 1
    order = scores.argsort()[::-1]

    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(proposals[i].tolist())
        xx1 = np.maximum(x1[i], x1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])

        inter = np.maximum(0.0, xx2 - xx1 + 1)

        iou = inter / (areas[i] + areas[order[1:]] - inter)

        inds = np.where(iou < thresh)[0]
        order = order[inds + 1]

    return keep


def release_result2json(result, class_names=THUMOS14_CLASSES):
    """utils.py: result2json. result: per class, its NMS-kept rows.

    Returns [{'label', 'score', 'segment': [start, end]}], classes in the order given.
    """
    class_dict = dict(enumerate(class_names))
    result_file = []
    for i in range(len(result)):
        for j in range(len(result[i])):
            # the release looks the float class id (3.0) up in an int-keyed dict: same hash
            line = {'label': class_dict[result[i][j][0]], 'score': result[i][j][1],
                    'segment': [result[i][j][2], result[i][j][3]]}
            result_file.append(line)
    return result_file


# ---------------------------------------------------------------------------------------------
# test.py, one video at a time

def release_binarise(p_supp_row, class_threshold=0.25):
    """test.py: ``score_np = score_supp[0, :-1]`` binarised in place. (C+1,) -> (C,) of 0/1."""
    score_np = np.array(p_supp_row, copy=True)[:-1]
    score_np[np.where(score_np < class_threshold)] = 0
    score_np[np.where(score_np >= class_threshold)] = 1
    return score_np


def release_accuracy(labels, p_supp, class_threshold=0.25):
    """test.py: test_acc over videos. labels (N, C) multi-hot; p_supp (N, C+1) -> float.

    A video is correct when its binarised suppression scores equal its label vector exactly.
    """
    num_correct = 0.
    num_total = 0.
    num_classes = np.shape(labels)[1]
    for v in range(len(labels)):
        label_np = np.asarray(labels[v])[None]
        score_np = release_binarise(p_supp[v], class_threshold)
        correct_pred = np.sum(label_np == score_np, axis=1)
        num_correct += np.sum((correct_pred == num_classes).astype(np.float32))
        num_total += correct_pred.shape[0]
    return num_correct / num_total


def release_detect(p_supp_row, cas_supp, num_segments_original, *, class_threshold=0.25, scale=24,
                   num_segments=750, feature_fps=25, act_thresh=ACT_THRESH, nms_thresh=0.7,
                   class_names=THUMOS14_CLASSES, on_crash='raise'):
    """test.py: test(), the localisation of one video from the suppression branch's outputs.

    p_supp_row (C+1,): score_supp[0]; cas_supp (num_segments, C+1): cas_supp[0], un-normalised
    (float32 as the release's); num_segments_original: the video's own segment count (vid_num_seg).
    Returns the release's list for ``results[video]``: [{'label', 'score', 'segment': [s, e]}],
    classes in ascending index order, each in NMS keep order; or None where the release writes no
    key (no class with p >= class_threshold, or the ``pred.any()`` quirk: only class 0).

    Where the release raises IndexError (a localised class without any proposal at some
    threshold), ``on_crash`` chooses: 'raise' ReleaseCrash (the release), 'skip_threshold' (that
    class contributes nothing at that threshold) or 'skip_class' (the class is dropped from the
    video). The last two are closures for comparison with a port, not release behaviour.
    """
    if on_crash not in ('raise', 'skip_threshold', 'skip_class'):
        raise ValueError(f'on_crash must be raise, skip_threshold or skip_class, not {on_crash!r}')
    score_np = release_binarise(p_supp_row, class_threshold)
    cas_supp = release_minmax_norm(np.asarray(cas_supp)[None])

    pred = np.where(score_np > class_threshold)[0]
    if not pred.any():
        return None

    cas_pred = cas_supp[0][:, pred]
    cas_pred = np.reshape(cas_pred, (num_segments, -1, 1))
    cas_pred = release_upgrade_resolution(cas_pred, scale)

    proposal_dict = {}
    dropped = set()
    for i in range(len(act_thresh)):
        cas_temp = cas_pred.copy()
        zero_location = np.where(cas_temp[:, :, 0] < act_thresh[i])
        cas_temp[zero_location] = 0

        seg_list = []
        for c in range(len(pred)):
            pos = np.where(cas_temp[:, c, 0] > 0)
            seg_list.append(pos)

        proposals = release_proposal_oic(seg_list, cas_temp, score_np, pred, scale,
                                         num_segments_original, feature_fps, num_segments)

        for j in range(len(proposals)):
            if not proposals[j]:
                if on_crash == 'raise':
                    raise ReleaseCrash(int(pred[j]), float(act_thresh[i]))
                if on_crash == 'skip_class':
                    dropped.add(int(pred[j]))
                continue
            class_id = proposals[j][0][0]
            if class_id not in proposal_dict.keys():
                proposal_dict[class_id] = []
            proposal_dict[class_id] += proposals[j]

    final_proposals = []
    for class_id in proposal_dict.keys():
        if int(class_id) not in dropped:
            final_proposals.append(release_nms(proposal_dict[class_id], nms_thresh))
    return release_result2json(final_proposals, class_names)


def release_test(videos, *, class_threshold=0.25, class_names=THUMOS14_CLASSES, **detect_kwargs):
    """test.py: test() over videos, less the model and the evaluator.

    videos: iterable of (vid_name, label (C,), p_supp_row (C+1,), cas_supp (T, C+1), n_original).
    Returns (final_res, test_acc): final_res the dict test.py writes to temp_result.json.
    ReleaseCrash propagates as the release's IndexError would.
    """
    final_res = {'version': 'VERSION 1.3', 'results': {},
                 'external_data': {'used': True, 'details': 'Features from I3D Network'}}
    labels, scores = [], []
    for vid_name, label, p_supp_row, cas_supp, n_original in videos:
        labels.append(label)
        scores.append(p_supp_row)
        result = release_detect(p_supp_row, cas_supp, n_original, class_threshold=class_threshold,
                                class_names=class_names, **detect_kwargs)
        if result is not None:
            final_res['results'][vid_name] = result
    test_acc = release_accuracy(np.asarray(labels), np.asarray(scores), class_threshold)
    return final_res, test_acc
