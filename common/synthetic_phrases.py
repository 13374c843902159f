"""Phrase banks of the synthetic report generator (data only; see `common.synthetic`).

Each finding has positive, uncertain and negated phrasings plus a short impression form.
Slots: {side} left/right/bilateral, {size} small/moderate/large, {lobe} a lobe, {level} a level.
"""

from __future__ import annotations

MIMIC_FINDINGS = {
    "Atelectasis": dict(
        pos=[
            "{side} basilar atelectasis",
            "subsegmental atelectasis at the {side} base",
            "plate-like atelectasis in the {lobe}",
            "bibasilar atelectasis",
            "linear atelectasis in the {lobe}",
            "{side} lower lobe collapse",
        ],
        unc=[
            "{side} basilar atelectasis is possible",
            "possible atelectasis at the {side} base",
            "findings at the {side} base may represent atelectasis",
        ],
        neg=["no atelectasis", "no evidence of lobar collapse"],
        imp=["atelectasis", "basilar atelectasis"],
    ),
    "Cardiomegaly": dict(
        pos=[
            "the heart is enlarged",
            "{size} cardiomegaly",
            "cardiac silhouette is enlarged",
            "the heart size is increased",
            "marked enlargement of the cardiac silhouette",
        ],
        unc=["heart size is borderline enlarged", "possible mild cardiomegaly", "the heart may be mildly enlarged"],
        neg=["heart size is normal", "no cardiomegaly", "the heart is not enlarged"],
        imp=["cardiomegaly", "enlarged heart"],
    ),
    "Consolidation": dict(
        pos=[
            "focal consolidation in the {lobe}",
            "dense consolidation of the {lobe}",
            "{side} lower lobe consolidation",
            "airspace consolidation in the {lobe}",
        ],
        unc=[
            "early consolidation cannot be excluded",
            "possible consolidation in the {lobe}",
            "questionable {side} basilar consolidation",
        ],
        neg=["no focal consolidation", "no consolidation", "no airspace consolidation"],
        imp=["consolidation", "{lobe} consolidation"],
    ),
    "Edema": dict(
        pos=[
            "{size} pulmonary edema",
            "interstitial edema",
            "vascular congestion with interstitial edema",
            "perihilar haziness consistent with pulmonary edema",
            "alveolar edema",
        ],
        unc=[
            "possible mild pulmonary edema",
            "edema is not excluded",
            "mild vascular prominence may reflect early edema",
        ],
        neg=["no pulmonary edema", "no evidence of edema", "no vascular congestion or edema"],
        imp=["pulmonary edema", "interstitial edema"],
    ),
    "Enlarged Cardiomediastinum": dict(
        pos=[
            "widened mediastinum",
            "enlarged cardiomediastinal silhouette",
            "the mediastinal contour is widened",
            "mediastinal widening",
        ],
        unc=["mediastinal contour is possibly widened", "the mediastinum may be widened"],
        neg=[
            "cardiomediastinal silhouette is normal",
            "mediastinal contours are within normal limits",
            "normal cardiomediastinal contours",
        ],
        imp=["widened mediastinum", "enlarged cardiomediastinum"],
    ),
    "Fracture": dict(
        pos=[
            "acute fracture of the {side} {level} rib",
            "healed {side} rib fractures",
            "displaced fracture of the {side} clavicle",
            "compression fracture of a thoracic vertebral body",
        ],
        unc=["possible nondisplaced {side} rib fracture", "a subtle rib fracture cannot be excluded"],
        neg=["no acute fracture", "no displaced fracture", "osseous structures are intact"],
        imp=["rib fracture", "fracture"],
    ),
    "Lung Lesion": dict(
        pos=[
            "{size} nodule in the {lobe}",
            "spiculated mass in the {lobe}",
            "{side} hilar mass",
            "a cavitary lesion in the {lobe}",
            "multiple pulmonary nodules",
        ],
        unc=["possible nodule in the {lobe}", "a nodular opacity in the {lobe} may represent a lesion"],
        neg=["no suspicious pulmonary nodule", "no focal mass", "no lung nodules"],
        imp=["pulmonary nodule", "lung mass"],
    ),
    "Lung Opacity": dict(
        pos=[
            "patchy opacity in the {lobe}",
            "hazy opacities in the {side} lung",
            "{side} basilar opacity",
            "streaky opacities at the {side} base",
            "ill-defined opacity in the {lobe}",
        ],
        unc=["questionable opacity in the {lobe}", "possible faint opacity at the {side} base"],
        neg=["no focal opacity", "lungs are otherwise clear"],
        imp=["opacity", "{lobe} opacity"],
    ),
    "Pleural Effusion": dict(
        pos=[
            "{size} {side} pleural effusion",
            "blunting of the {side} costophrenic angle from effusion",
            "{side} pleural effusions",
            "layering {side} effusion",
            "{size} {side} effusion",
        ],
        unc=[
            "possible small {side} effusion",
            "trace effusion cannot be excluded",
            "blunting of the {side} costophrenic angle may reflect a small effusion",
        ],
        neg=["no pleural effusion", "no effusion", "no large pleural effusion"],
        imp=["pleural effusion", "{side} effusion"],
    ),
    "Pleural Other": dict(
        pos=[
            "{side} apical pleural thickening",
            "calcified pleural plaques",
            "pleural thickening along the {side} hemithorax",
        ],
        unc=["possible pleural thickening on the {side}", "questionable pleural plaque"],
        neg=["no pleural thickening"],
        imp=["pleural thickening", "pleural plaques"],
    ),
    "Pneumonia": dict(
        pos=[
            "findings consistent with pneumonia",
            "compatible with {lobe} pneumonia",
            "findings of multifocal pneumonia",
            "this represents pneumonia",
        ],
        unc=[
            "pneumonia cannot be excluded",
            "could represent pneumonia in the appropriate clinical setting",
            "concerning for possible pneumonia",
            "infection is not excluded",
        ],
        neg=["no evidence of pneumonia", "no findings to suggest pneumonia"],
        imp=["pneumonia", "{lobe} pneumonia"],
    ),
    "Pneumothorax": dict(
        pos=[
            "{size} {side} pneumothorax",
            "{side} apical pneumothorax",
            "a {side} pneumothorax is present",
            "{side} pneumothorax with pleural line visible",
        ],
        unc=["possible tiny {side} apical pneumothorax", "a small pneumothorax cannot be excluded"],
        neg=["no pneumothorax", "there is no pneumothorax"],
        imp=["pneumothorax", "{side} pneumothorax"],
    ),
    "Support Devices": dict(
        pos=[
            "endotracheal tube terminates 4 cm above the carina",
            "right PICC line tip in the SVC",
            "nasogastric tube courses below the diaphragm",
            "median sternotomy wires",
            "left chest wall pacemaker with leads in the right heart",
            "right internal jugular catheter ends in the SVC",
        ],
        unc=["a catheter of uncertain position projects over the upper chest"],
        neg=["no lines or tubes"],
        imp=["support devices in place", "lines and tubes as above"],
    ),
}

MIMIC_NORMAL = [
    "no acute cardiopulmonary process",
    "normal chest radiograph",
    "no acute intrathoracic abnormality",
    "no radiographic evidence of acute disease",
]
MIMIC_CLEAR = ["the lungs are clear", "lungs are well expanded and clear", "clear lungs"]
MIMIC_INDICATIONS = [
    "shortness of breath",
    "cough and fever",
    "chest pain",
    "evaluate for pneumonia",
    "fall with chest wall pain",
    "post procedure evaluation",
    "hypoxia",
    "preoperative evaluation",
    "follow up of known nodule",
    "fatigue",
]

CT_FINDINGS = {
    "Medical material": dict(
        pos=[
            "a central venous port catheter tip in the superior vena cava",
            "sternotomy wires",
            "a cardiac pacemaker",
            "surgical clips in the {side} hilum",
            "a stent in the coronary artery",
        ],
        unc=["a linear density that may represent a catheter"],
        neg=["no medical material"],
        imp=["postoperative material", "port catheter"],
    ),
    "Arterial wall calcification": dict(
        pos=[
            "calcific atherosclerotic changes in the thoracic aorta",
            "calcified plaques in the aortic wall",
            "atheromatous calcification of the aortic arch",
        ],
        unc=["faint calcification of the aortic wall"],
        neg=["no arterial wall calcification"],
        imp=["aortic atherosclerosis"],
    ),
    "Cardiomegaly": dict(
        pos=["the heart is enlarged", "cardiomegaly", "increased cardiothoracic ratio"],
        unc=["heart size at the upper limit of normal"],
        neg=["heart size is normal", "the heart is not enlarged"],
        imp=["cardiomegaly"],
    ),
    "Pericardial effusion": dict(
        pos=["{size} pericardial effusion", "pericardial fluid measuring 12 mm"],
        unc=["minimal pericardial thickening or effusion"],
        neg=["no pericardial effusion", "no pericardial thickening or effusion"],
        imp=["pericardial effusion"],
    ),
    "Coronary artery wall calcification": dict(
        pos=[
            "calcification of the coronary arteries",
            "calcified plaques in the left anterior descending artery",
            "coronary artery calcifications",
        ],
        unc=["possible coronary calcification"],
        neg=["no coronary artery calcification"],
        imp=["coronary artery disease"],
    ),
    "Hiatal hernia": dict(
        pos=["a {size} hiatal hernia", "herniation of the stomach through the hiatus"],
        unc=["possible small hiatal hernia"],
        neg=["no hiatal hernia"],
        imp=["hiatal hernia"],
    ),
    "Lymphadenopathy": dict(
        pos=[
            "enlarged mediastinal lymph nodes up to 15 mm",
            "pathologically enlarged {side} hilar lymph nodes",
            "mediastinal lymphadenopathy",
        ],
        unc=["borderline sized mediastinal lymph nodes"],
        neg=["no mediastinal lymphadenopathy", "no pathologically enlarged lymph nodes"],
        imp=["lymphadenopathy"],
    ),
    "Emphysema": dict(
        pos=[
            "centrilobular emphysema in both upper lobes",
            "paraseptal emphysematous changes",
            "bullous emphysema in the {lobe}",
        ],
        unc=["mild emphysematous changes may be present"],
        neg=["no emphysema"],
        imp=["emphysema"],
    ),
    "Atelectasis": dict(
        pos=[
            "subsegmental atelectasis in the {lobe}",
            "linear atelectasis in the {lobe}",
            "passive atelectasis at the {side} base",
        ],
        unc=["possible atelectasis in the {lobe}"],
        neg=["no atelectasis"],
        imp=["atelectasis"],
    ),
    "Lung nodule": dict(
        pos=[
            "a {size} nodule in the {lobe}",
            "several millimetric nodules in both lungs",
            "a solid nodule in the {lobe}",
            "a ground glass nodule in the {lobe}",
        ],
        unc=["a tiny nodular density in the {lobe} may be a nodule"],
        neg=["no pulmonary nodule", "no nodules"],
        imp=["pulmonary nodule", "lung nodules"],
    ),
    "Lung opacity": dict(
        pos=["ground glass opacities in the {lobe}", "patchy opacities in both lungs", "an opacity in the {lobe}"],
        unc=["faint density increase in the {lobe}"],
        neg=["no focal opacity"],
        imp=["ground glass opacities", "lung opacity"],
    ),
    "Pulmonary fibrotic sequela": dict(
        pos=["fibrotic sequelae in the {lobe}", "fibrotic bands in the {lobe}", "parenchymal scarring in the {lobe}"],
        unc=["possible fibrotic change in the {lobe}"],
        neg=["no fibrotic changes"],
        imp=["fibrotic sequelae"],
    ),
    "Pleural effusion": dict(
        pos=["{size} {side} pleural effusion", "{side} pleural effusions", "pleural fluid on the {side}"],
        unc=["minimal pleural thickening or effusion on the {side}"],
        neg=["no pleural effusion", "no pleural effusion or thickening"],
        imp=["pleural effusion"],
    ),
    "Mosaic attenuation pattern": dict(
        pos=["mosaic attenuation pattern in both lungs", "mosaic perfusion in the {lobe}"],
        unc=["subtle heterogeneous attenuation possibly mosaic"],
        neg=["no mosaic attenuation"],
        imp=["mosaic attenuation"],
    ),
    "Peribronchial thickening": dict(
        pos=[
            "peribronchial thickening",
            "bronchial wall thickening in the {lobe}",
            "peribronchial cuffing in both lower lobes",
        ],
        unc=["mild bronchial wall thickening may be present"],
        neg=["no peribronchial thickening"],
        imp=["peribronchial thickening"],
    ),
    "Consolidation": dict(
        pos=[
            "consolidation in the {lobe}",
            "a consolidated area with air bronchograms in the {lobe}",
            "dense consolidation of the {lobe}",
        ],
        unc=["consolidation cannot be excluded in the {lobe}"],
        neg=["no consolidation"],
        imp=["consolidation"],
    ),
    "Bronchiectasis": dict(
        pos=[
            "cylindrical bronchiectasis in the {lobe}",
            "bronchiectatic changes in both lower lobes",
            "traction bronchiectasis",
        ],
        unc=["mild bronchial dilatation possibly bronchiectasis"],
        neg=["no bronchiectasis"],
        imp=["bronchiectasis"],
    ),
    "Interlobular septal thickening": dict(
        pos=[
            "interlobular septal thickening",
            "smooth septal thickening in both lungs",
            "septal thickening in the {lobe}",
        ],
        unc=["minimal septal thickening may be present"],
        neg=["no septal thickening"],
        imp=["septal thickening"],
    ),
}

CT_NORMAL = ["no acute pathology in the thorax", "normal chest CT", "no significant abnormality"]
CT_CLEAR = ["the lung parenchyma is unremarkable", "both lungs are clear"]
CT_INDICATIONS = [
    "cough",
    "dyspnea",
    "fever",
    "follow up of nodule",
    "chest pain",
    "weight loss",
    "preoperative screening",
]

SLOTS = {
    "side": ["left", "right", "bilateral"],
    "size": ["small", "moderate", "large", "mild"],
    "lobe": [
        "right upper lobe",
        "right middle lobe",
        "right lower lobe",
        "left upper lobe",
        "left lower lobe",
        "lingula",
    ],
    "level": ["fourth", "fifth", "sixth", "seventh", "eighth"],
}

# Organ systems of CT-RATE findings and how often each finding appears when its system is involved
# (shared by the easy and the realistic generator).
CT_SCENARIOS = {
    "normal": {},
    "cardiovascular": {
        "Arterial wall calcification": 0.85,
        "Coronary artery wall calcification": 0.8,
        "Cardiomegaly": 0.4,
        "Pericardial effusion": 0.2,
        "Hiatal hernia": 0.15,
    },
    "copd": {
        "Emphysema": 0.85,
        "Bronchiectasis": 0.35,
        "Peribronchial thickening": 0.5,
        "Mosaic attenuation pattern": 0.25,
        "Lung nodule": 0.35,
    },
    "infection": {
        "Consolidation": 0.6,
        "Lung opacity": 0.8,
        "Pleural effusion": 0.35,
        "Lymphadenopathy": 0.3,
        "Atelectasis": 0.35,
        "Peribronchial thickening": 0.3,
    },
    "fibrosis": {
        "Pulmonary fibrotic sequela": 0.85,
        "Interlobular septal thickening": 0.6,
        "Bronchiectasis": 0.45,
        "Lung opacity": 0.3,
    },
    "oncology": {
        "Lung nodule": 0.85,
        "Lymphadenopathy": 0.5,
        "Pleural effusion": 0.3,
        "Medical material": 0.45,
        "Atelectasis": 0.25,
    },
    "post-surgical": {
        "Medical material": 0.9,
        "Atelectasis": 0.5,
        "Pleural effusion": 0.45,
        "Arterial wall calcification": 0.4,
    },
}
