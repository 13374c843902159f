"""Case mix and phrase banks of the realistic synthetic reports (data only; see `common.synthetic_realistic`).

Per finding: `pos` full noun phrases, `abbr` forms that hide the finding's word behind an
abbreviation (a labeler that matches words misses them), `neg` the words used in a negation
("no pleural effusion, pneumothorax or ..."), `imp` impression forms and, for findings that are
usually stated as a whole sentence when normal, `normal` sentences that negate them.
Slots: {side} {lr} {size} {lobe} {level} {meas} {cm}, and abbreviated {ab_side} {ab_lr} {ab_lobe}.
"""

from __future__ import annotations

# ---------------------------------------------------------------- case mix (true findings)
# Background rates (older patients) plus clinical scenarios with the same names as the easy ones,
# so each hospital's scenario_weights keep its case mix. Tuned so that the labelled prevalences
# look like MIMIC-CXR's and CT-RATE's.
MIMIC_BACKGROUND = {"Atelectasis": .09, "Cardiomegaly": .08, "Lung Opacity": .06, "Pleural Effusion": .05, "Support Devices": .08,
                    "Edema": .03, "Consolidation": .01, "Pneumonia": .025, "Pneumothorax": .008, "Enlarged Cardiomediastinum": .015,
                    "Fracture": .01, "Lung Lesion": .01, "Pleural Other": .01}
MIMIC_SCENARIOS = {
    "normal": {},
    "heart-failure": {"Cardiomegaly": .75, "Edema": .6, "Pleural Effusion": .6, "Enlarged Cardiomediastinum": .2, "Atelectasis": .3,
                      "Lung Opacity": .2, "Support Devices": .3},
    "infection": {"Pneumonia": .55, "Consolidation": .25, "Lung Opacity": .7, "Pleural Effusion": .25, "Atelectasis": .25, "Support Devices": .15},
    "critical-care": {"Support Devices": .95, "Atelectasis": .5, "Pleural Effusion": .45, "Edema": .35, "Lung Opacity": .35, "Pneumothorax": .1,
                      "Pneumonia": .15, "Cardiomegaly": .3, "Consolidation": .1},
    "trauma": {"Fracture": .3, "Pneumothorax": .3, "Lung Opacity": .25, "Pleural Other": .05, "Support Devices": .3, "Atelectasis": .2},
    "oncology": {"Lung Lesion": .3, "Pleural Effusion": .35, "Lung Opacity": .25, "Support Devices": .35, "Pleural Other": .06,
                 "Atelectasis": .25, "Enlarged Cardiomediastinum": .1},
    "chronic": {"Cardiomegaly": .45, "Atelectasis": .3, "Pleural Other": .05, "Lung Opacity": .15, "Fracture": .05, "Pleural Effusion": .2,
                "Enlarged Cardiomediastinum": .08, "Edema": .1},
}
CT_BACKGROUND = {"Arterial wall calcification": .15, "Coronary artery wall calcification": .12, "Lung nodule": .25, "Lung opacity": .1,
                 "Atelectasis": .1, "Pulmonary fibrotic sequela": .12, "Emphysema": .06, "Lymphadenopathy": .06, "Hiatal hernia": .06,
                 "Cardiomegaly": .04, "Medical material": .04, "Pleural effusion": .03, "Bronchiectasis": .04, "Peribronchial thickening": .04,
                 "Consolidation": .03, "Interlobular septal thickening": .02, "Mosaic attenuation pattern": .03, "Pericardial effusion": .02}
CT_SCENARIOS = {
    "normal": {},
    "cardiovascular": {"Arterial wall calcification": .85, "Coronary artery wall calcification": .8, "Cardiomegaly": .4,
                       "Pericardial effusion": .2, "Hiatal hernia": .15},
    "copd": {"Emphysema": .85, "Bronchiectasis": .35, "Peribronchial thickening": .5, "Mosaic attenuation pattern": .25, "Lung nodule": .35},
    "infection": {"Consolidation": .6, "Lung opacity": .8, "Pleural effusion": .35, "Lymphadenopathy": .3, "Atelectasis": .35,
                  "Peribronchial thickening": .3},
    "fibrosis": {"Pulmonary fibrotic sequela": .85, "Interlobular septal thickening": .6, "Bronchiectasis": .45, "Lung opacity": .3},
    "oncology": {"Lung nodule": .85, "Lymphadenopathy": .5, "Pleural effusion": .3, "Medical material": .45, "Atelectasis": .25},
    "post-surgical": {"Medical material": .9, "Atelectasis": .5, "Pleural effusion": .45, "Arterial wall calcification": .4},
}
# Chance that an impression leaves a finding out (scaled by the hospital's voice): minor and
# chronic findings often stay in the findings section, where an impression-reading labeler misses them.
MIMIC_OMIT = {"Atelectasis": .11, "Cardiomegaly": .07, "Pleural Other": .15, "Fracture": .11, "Enlarged Cardiomediastinum": .11,
              "Lung Opacity": .07, "Pleural Effusion": .05, "Support Devices": .07}
CT_OMIT = {"Arterial wall calcification": .3, "Coronary artery wall calcification": .2, "Atelectasis": .4, "Pulmonary fibrotic sequela": .3}
# Findings that reports negate by habit, in macro order, with a relative weight.
MIMIC_NEGATED = {"Pneumothorax": 1.0, "Pleural Effusion": 1.0, "Consolidation": .8, "Edema": .45, "Pneumonia": .25, "Lung Opacity": .25,
                 "Lung Lesion": .1}
CT_NEGATED = {"Pleural effusion": 1.0, "Pericardial effusion": .9, "Lymphadenopathy": .8, "Lung nodule": .6, "Consolidation": .4,
              "Lung opacity": .3, "Emphysema": .2, "Hiatal hernia": .2, "Bronchiectasis": .1}

# ---------------------------------------------------------------- slots
SLOTS = {  # values a finding draws independently; earlier values are the commoner ones
    "side": ["left", "right", "bilateral"],
    "size": ["small", "moderate", "mild", "large", "trace", "small to moderate", "minimal"],
    "level": ["fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "posterior right 6th", "lateral left 7th"],
    "meas": ["3.2 cm", "5 mm", "1.4 cm", "8 mm", "2.1 x 1.8 cm", "12 mm", "4.5 cm", "6 mm", "1.1 cm", "2.7 cm"],
    "cm": ["3", "4", "5", "2.5", "6", "3.5", "4.5", "2", "7"],
}
SIDE_ABBR = {"left": ["L", "lt"], "right": ["R", "rt"], "bilateral": ["b/l", "bilat", "bilateral"]}
LOBES = {  # (lobe, abbreviation) on each side, so that "left effusion" never meets "RLL"
    "left": [("left lower lobe", "LLL"), ("left base", "L base"), ("left upper lobe", "LUL"), ("lingula", "lingula"),
             ("retrocardiac region", "retrocardiac"), ("left lung", "L lung"), ("left midlung", "L midlung")],
    "right": [("right lower lobe", "RLL"), ("right base", "R base"), ("right upper lobe", "RUL"), ("right middle lobe", "RML"),
              ("right lung", "R lung"), ("right midlung", "R midlung")],
}

# ---------------------------------------------------------------- phrases
MIMIC_BANK = {
    "Atelectasis": dict(
        pos=["{side} basilar atelectasis", "bibasilar atelectasis", "subsegmental atelectasis at the {lr} base", "plate-like atelectasis in the {lobe}",
             "linear atelectasis in the {lobe}", "{lobe} collapse", "minimal dependent atelectasis", "discoid atelectasis at the {lr} base",
             "atelectasis of the {lobe}", "bibasilar atelectatic changes", "streaky bibasilar atelectasis", "{size} atelectasis in the {lobe}",
             "volume loss with atelectasis in the {lobe}", "{lobe} atelectasis", "patchy atelectasis at both bases"],
        abbr=["bibasilar atx", "{ab_lobe} atx", "{ab_side} basilar atx", "subseg atx {ab_lobe}"],
        neg=["atelectasis", "collapse", "lobar collapse"],
        imp=["atelectasis", "bibasilar atelectasis", "{side} basilar atelectasis", "{lobe} collapse"],
    ),
    "Cardiomegaly": dict(
        pos=["{size} cardiomegaly", "enlarged cardiac silhouette", "{size} enlargement of the cardiac silhouette", "enlarged heart",
             "cardiomegaly", "marked cardiomegaly", "{size} cardiac enlargement", "globular enlargement of the heart",
             "the heart size is increased", "moderately enlarged heart", "stable cardiomegaly"],
        abbr=["enlarged CS", "mild CM", "incr heart size", "cardiomeg"],
        neg=["cardiomegaly"],
        normal=["The heart size is normal.", "Heart size is within normal limits.", "The cardiac silhouette is not enlarged.",
                "Normal heart size.", "Heart size is top normal.", "Cardiac size is normal."],
        imp=["cardiomegaly", "enlarged heart", "{size} cardiomegaly"],
    ),
    "Consolidation": dict(
        pos=["focal consolidation in the {lobe}", "dense consolidation of the {lobe}", "{lobe} consolidation", "airspace consolidation in the {lobe}",
             "consolidative change in the {lobe}", "consolidation with air bronchograms in the {lobe}", "patchy consolidation at the {lr} base",
             "confluent consolidation in the {lobe}"],
        abbr=["{ab_lobe} consol", "consol {ab_lobe}", "{ab_lobe} airspace dz"],
        neg=["focal consolidation", "consolidation", "airspace consolidation", "confluent consolidation"],
        imp=["consolidation", "{lobe} consolidation"],
    ),
    "Edema": dict(
        pos=["{size} pulmonary edema", "interstitial edema", "{size} interstitial pulmonary edema", "vascular congestion with {size} edema",
             "perihilar haziness consistent with pulmonary edema", "alveolar edema", "{size} interstitial edema", "pulmonary vascular engorgement and edema",
             "diffuse interstitial prominence consistent with edema", "cephalization with interstitial edema", "moderate to severe pulmonary edema"],
        abbr=["CHF", "mild CHF", "fluid overload", "pulm vasc congestion"],
        neg=["pulmonary edema", "edema", "vascular congestion", "overt pulmonary edema", "interstitial edema"],
        imp=["pulmonary edema", "interstitial edema", "{size} pulmonary edema", "congestive heart failure"],
    ),
    "Enlarged Cardiomediastinum": dict(
        pos=["widened mediastinum", "enlarged cardiomediastinal silhouette", "widening of the mediastinum", "mediastinal widening",
             "prominence of the mediastinal contour", "enlarged cardiomediastinal contours", "widening of the superior mediastinum"],
        abbr=["wide mediast", "enlarged CMS", "wide sup mediast"],
        neg=["mediastinal widening"],
        normal=["The mediastinal and hilar contours are normal.", "Cardiomediastinal silhouette is within normal limits.",
                "Normal cardiomediastinal contours.", "Mediastinal contours are unremarkable.", "The cardiomediastinal silhouette is normal."],
        imp=["widened mediastinum", "enlarged cardiomediastinal silhouette"],
    ),
    "Fracture": dict(
        pos=["acute fracture of the {lr} {level} rib", "healed {lr} rib fractures", "displaced fracture of the {lr} clavicle",
             "compression fracture of a midthoracic vertebral body", "old healed fracture of the {lr} {level} rib",
             "nondisplaced fracture of the {lr} {level} rib", "multiple {lr} rib fractures", "fracture of the {lr} humeral neck"],
        abbr=["{ab_side} rib fx", "healed {ab_side} rib fx", "{ab_side} clavicle fx", "T-spine compression fx"],
        neg=["acute fracture", "displaced fracture", "rib fracture", "fracture"],
        normal=["No acute osseous abnormality.", "Osseous structures are intact.", "No displaced rib fractures.",
                "Bony structures are unremarkable.", "No acute fracture is seen."],
        imp=["rib fracture", "{lr} rib fractures", "fracture"],
    ),
    "Lung Lesion": dict(
        pos=["{meas} nodule in the {lobe}", "spiculated mass in the {lobe} measuring {meas}", "{side} hilar mass", "a cavitary lesion in the {lobe}",
             "multiple pulmonary nodules", "{meas} nodular density in the {lobe}", "a {meas} mass in the {lobe}",
             "innumerable pulmonary metastases", "a {meas} pulmonary nodule in the {lobe}"],
        abbr=["{meas} SPN {ab_lobe}", "{ab_lobe} nod", "{ab_lobe} lesion {meas}", "mets"],
        neg=["suspicious pulmonary nodule", "pulmonary nodule", "mass", "lung nodules", "suspicious nodules"],
        imp=["pulmonary nodule", "lung mass", "{lobe} nodule", "{lobe} mass"],
    ),
    "Lung Opacity": dict(
        pos=["patchy opacity in the {lobe}", "hazy opacities in the {lr} lung", "{side} basilar opacity", "streaky opacities at the {lr} base",
             "ill-defined opacity in the {lobe}", "bibasilar opacities", "increased opacity at the {lr} base", "ground-glass opacity in the {lobe}",
             "reticular opacities at both bases", "{size} opacification of the {lobe}", "hazy retrocardiac opacity", "opacity projecting over the {lobe}",
             "nodular opacities in the {lr} lung"],
        abbr=["{ab_lobe} opac", "b/l opac", "{ab_lobe} GGO", "{ab_side} basilar opac"],
        neg=["focal opacity", "opacity", "focal airspace opacity", "new opacities"],
        imp=["opacity", "{lobe} opacity", "{side} basilar opacities", "bibasilar opacities"],
    ),
    "Pleural Effusion": dict(
        pos=["{size} {side} pleural effusion", "blunting of the {lr} costophrenic angle from a {size} effusion", "{side} pleural effusions",
             "layering {side} effusion", "{size} {side} effusion", "{size} bilateral pleural effusions", "{side} effusion with adjacent compressive change",
             "loculated {lr} pleural fluid", "meniscus of {lr} pleural fluid", "{size} bilateral effusions, left greater than right"],
        abbr=["{ab_side} eff", "b/l effs", "{ab_side} pl eff", "sm {ab_side} eff"],
        neg=["pleural effusion", "effusion", "large pleural effusion", "pleural effusions", "sizable effusion"],
        imp=["pleural effusion", "{side} effusion", "{size} {side} pleural effusion", "bilateral effusions"],
    ),
    "Pleural Other": dict(
        pos=["{side} apical pleural thickening", "calcified pleural plaques", "pleural thickening along the {lr} hemithorax",
             "{lr} pleural scarring", "blunting from chronic pleural thickening on the {lr}"],
        abbr=["{ab_side} pl thickening", "calc pl plaques"],
        neg=["pleural thickening"],
        imp=["pleural thickening", "pleural plaques", "chronic pleural scarring"],
    ),
    "Pneumonia": dict(
        pos=["pneumonia in the {lobe}", "{lobe} pneumonia", "multifocal pneumonia", "aspiration pneumonia in the {lobe}",
             "findings consistent with pneumonia", "bronchopneumonia", "infectious process in the {lobe}", "infection in the {lobe}"],
        abbr=["{ab_lobe} PNA", "PNA", "multifocal PNA", "asp PNA {ab_lobe}"],
        neg=["pneumonia", "focal pneumonia", "acute pneumonia", "findings of pneumonia"],
        imp=["pneumonia", "{lobe} pneumonia", "multifocal pneumonia", "aspiration"],
    ),
    "Pneumothorax": dict(
        pos=["{size} {side} pneumothorax", "{side} apical pneumothorax", "tiny {side} apical pneumothorax", "{lr} pneumothorax with visible pleural line",
             "{side} hydropneumothorax", "{size} {lr} basilar pneumothorax", "{side} pneumothorax measuring {cm} cm"],
        abbr=["{ab_side} PTX", "small {ab_side} apical PTX", "PTX", "tiny {ab_side} ptx"],
        neg=["pneumothorax", "definite pneumothorax", "pneumothoraces", "large pneumothorax"],
        imp=["pneumothorax", "{side} pneumothorax", "{size} {side} pneumothorax"],
    ),
}

# Devices: a sentence each, some with a position ("terminates 4 cm above the carina").
MIMIC_DEVICES = [
    "Endotracheal tube terminates {cm} cm above the carina.", "The ET tube tip is {cm} cm above the carina.", "Endotracheal tube in standard position.",
    "Nasogastric tube courses below the diaphragm with the tip in the stomach.", "NG tube tip is below the diaphragm.",
    "Enteric tube terminates in the stomach.", "{lr} PICC line tip in the SVC.", "{lr} PICC terminates at the cavoatrial junction.",
    "{lr} internal jugular central venous catheter terminates in the mid SVC.", "{lr} chest tube in place.",
    "Tracheostomy tube in place.", "Median sternotomy wires and mediastinal clips.", "Left chest wall pacemaker with leads in the right atrium and ventricle.",
    "{lr} subclavian catheter tip projects over the SVC.", "Feeding tube tip in the proximal duodenum.", "Left-sided AICD with lead in the right ventricle.",
]
MIMIC_DEVICES_ABBR = [
    "ETT {cm} cm above carina.", "ETT in good position.", "NGT below diaphragm.", "OGT tip in stomach.", "{ab_lr} PICC tip SVC.",
    "{ab_lr} IJ CVL tip mid SVC.", "{ab_lr} CT in place.", "Trach in place.", "ETT and NGT in place.", "Dobhoff in stomach.",
]
MIMIC_DEVICES_IMP = ["lines and tubes in standard position", "support devices as described", "tubes and lines as above",
                     "lines and tubes are unchanged in position", "support devices in appropriate position"]
MIMIC_DEVICES_GONE = ["Interval removal of the endotracheal tube.", "The NG tube has been removed.", "Interval removal of the right PICC.",
                      "Chest tube has been removed."]

MIMIC_NORMAL_IMP = ["No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.", "No acute intrathoracic process.",
                    "Normal chest radiograph.", "No radiographic evidence of acute disease.", "No evidence of acute disease in the chest.",
                    "No acute findings.", "Normal study.", "No acute cardiopulmonary process. No significant interval change."]
MIMIC_CLEAR = ["The lungs are clear.", "Lungs are well expanded and clear.", "Clear lungs.", "The lungs are well aerated and clear.",
               "Lungs are clear bilaterally."]
MIMIC_INDICATIONS = ["shortness of breath", "cough and fever", "chest pain", "evaluate for pneumonia", "fall with chest wall pain",
                     "post procedure evaluation", "hypoxia", "preoperative evaluation", "follow up of known nodule", "fatigue",
                     "intubated patient, assess tube position", "s/p line placement", "dyspnea, history of CHF", "fever, r/o PNA",
                     "h/o lung cancer, restaging", "tachypnea", "altered mental status", "trauma", "weakness", "ETT placement"]
MIMIC_EXTRA = [  # sentences that carry none of the labels: the bulk of many real reports
    "Degenerative changes of the thoracic spine.", "The aorta is tortuous.", "Calcification of the aortic knob.",
    "Surgical clips in the right upper quadrant.", "Hilar contours are unremarkable.", "The visualized upper abdomen is unremarkable.",
    "Mild hyperinflation.", "The patient is rotated.", "Low lung volumes.", "Limited study due to patient positioning.",
    "Multilevel degenerative changes are noted.", "Elevation of the right hemidiaphragm.", "Gas-distended bowel loops in the upper abdomen.",
    "Evaluation of the left base is limited by overlying soft tissue.", "Flattening of the diaphragms.", "Scoliosis of the thoracic spine.",
]
MIMIC_EXTRA += [
    "Mild thoracic kyphosis.", "Old granulomatous disease with calcified granulomas.", "Mild tortuosity of the descending aorta.",
    "Atherosclerotic calcifications of the aortic arch.", "Skin folds project over the right hemithorax.", "Nipple shadows are noted.",
    "The trachea is midline.", "Diffuse osteopenia.", "Anterior osteophytes in the mid thoracic spine.", "Chronic deformity of the right shoulder.",
    "Right humeral head prosthesis.", "Cholecystectomy clips are seen.", "Large hiatal hernia.", "Prominent epicardial fat pad.",
    "The upper abdomen is grossly unremarkable.", "Evaluation is limited by overlying external monitoring leads.",
]
MIMIC_OPENERS = ["PA and lateral views of the chest were provided.", "Single portable AP view of the chest.",
                 "Frontal and lateral views of the chest were obtained.", "AP upright and lateral views of the chest.",
                 "Portable semi-upright radiograph of the chest."]
ELABORATIONS = [  # what a long report adds about a finding without naming it again
    "This is best seen on the lateral view.", "This is unchanged in size compared to ___.", "This measures {meas} today, previously {prev}.",
    "This is slightly more conspicuous than on the prior exam.", "Findings were discussed with Dr. ___ by telephone at ___.",
    "Correlation with the clinical history is recommended.", "Attention on follow-up imaging is advised.",
    "The appearance is otherwise similar to the study from ___.", "Please see the concurrent CT report for further details.",
    "This could be further assessed with a dedicated chest CT if clinically indicated.",
]
MIMIC_RECOMMEND = ["Recommend follow-up radiograph after treatment to document resolution.", "Clinical correlation is recommended.",
                   "Further evaluation with chest CT is recommended.", "Findings were discussed with the clinical team at the time of the study.",
                   "Dr. was notified by telephone at the time of dictation.", "Comparison with prior studies would be helpful."]

# Templates of a mention. `{t}` is the phrase; `{T}` the same capitalised.
POSITIVE = ["{T}.", "There is {t}.", "{T} is noted.", "{T} is present.", "Findings of {t}.", "{T} is seen.", "Again seen is {t}."]
HEDGED = ["Possible {t}.", "{T} cannot be excluded.", "Findings may represent {t}.", "Likely {t}.", "Questionable {t}.",
          "Cannot exclude {t}.", "{T} is not excluded.", "Could reflect {t}.", "Possibly {t}.", "Findings are concerning for {t}.",
          "Suggestive of {t}.", "Probable {t}.", "{T} is suspected."]
TEMPORAL = {  # how a finding that persists from the prior study is written
    "same": ["Unchanged {t}.", "{T} is again seen.", "{T}, unchanged from prior.", "Stable {t}.", "Persistent {t}.", "{T} is similar to prior."],
    "better": ["Interval improvement in {t}.", "Slightly improved {t}.", "{T}, decreased since the prior study.", "Improving {t}."],
    "worse": ["Interval increase in {t}.", "Worsening {t}.", "{T} has increased since the prior exam.", "Progression of {t}."],
    "new": ["New {t}.", "Interval development of {t}.", "{T} is new since the prior study.", "New since prior, {t}."],
}
RESOLVED = ["Previously seen {t} has resolved.", "Interval resolution of {t}.", "{T} has resolved.", "No residual {t}.",
            "Resolution of the previously noted {t}.", "{T} seen on the prior study is no longer visualized.", "Resolved {t}."]
NEGATION = ["No {a}.", "No {a} or {b}.", "No {a}, {b} or {c}.", "There is no {a}, {b}, or {c}.", "No evidence of {a}, {b} or {c}.",
            "There is no {a} or {b}.", "No {a}, {b}, {c}, or {d}.", "No evidence of {a}, {b}, {c} or {d}.",
            "The lungs are clear without {a}, {b} or {c}.", "Without evidence of {a} or {b}.", "No {a} is seen.", "{A} is not seen."]
NUMBERED = ["{i}. {s}", "{i}) {s}"]

CT_BANK = {
    "Medical material": dict(
        pos=["a central venous port catheter with its tip in the superior vena cava", "sternotomy wires", "a cardiac pacemaker with leads in the right heart",
             "surgical clips in the {lr} hilum", "a stent in the left anterior descending artery", "a nasogastric tube", "prosthetic aortic valve",
             "an endotracheal tube", "a {lr} chest tube"],
        abbr=["port cath", "NGT", "ETT", "PM leads", "CABG clips", "{ab_lr} chest drain"],
        neg=["medical material"], imp=["postoperative material", "port catheter", "pacemaker", "post-CABG changes"]),
    "Arterial wall calcification": dict(
        pos=["calcific atherosclerotic changes in the thoracic aorta", "calcified plaques in the aortic wall", "atheromatous calcification of the aortic arch",
             "atherosclerotic calcifications in the aorta and its branches", "mural calcification of the descending aorta"],
        abbr=["Ao calc", "ASCVD calcs aorta"],
        neg=["aortic calcification", "atherosclerotic calcification"], imp=["aortic atherosclerosis", "atherosclerotic changes"]),
    "Cardiomegaly": dict(
        pos=["the heart is enlarged", "cardiomegaly", "increased cardiothoracic ratio", "{size} cardiomegaly", "enlargement of the cardiac chambers"],
        abbr=["CM", "incr CTR"],
        neg=["cardiomegaly"], normal=["Heart contour and size are normal.", "The heart is of normal size.", "Cardiac size is normal."],
        imp=["cardiomegaly"]),
    "Pericardial effusion": dict(
        pos=["{size} pericardial effusion", "pericardial fluid measuring {meas}", "pericardial effusion-thickening reaching {meas}"],
        abbr=["peric eff", "PE {meas}"],
        neg=["pericardial effusion", "pericardial effusion-thickening"], imp=["pericardial effusion"]),
    "Coronary artery wall calcification": dict(
        pos=["calcification of the coronary arteries", "calcified plaques in the left anterior descending artery", "coronary artery calcifications",
             "atherosclerotic calcification in the coronary arteries", "calcific plaques in the right coronary artery"],
        abbr=["CAC", "LAD calc", "coronary calc"],
        neg=["coronary calcification"], imp=["coronary artery disease", "coronary atherosclerosis"]),
    "Hiatal hernia": dict(
        pos=["a {size} hiatal hernia", "herniation of the stomach through the hiatus", "sliding hiatal hernia", "{size} hiatus hernia"],
        abbr=["HH", "sm HH"],
        neg=["hiatal hernia"], imp=["hiatal hernia"]),
    "Lymphadenopathy": dict(
        pos=["enlarged mediastinal lymph nodes up to {meas}", "pathologically enlarged {side} hilar lymph nodes", "mediastinal lymphadenopathy",
             "lymph nodes reaching {meas} in the subcarinal region", "conglomerate lymph nodes in the mediastinum"],
        abbr=["LAP", "mediastinal LAP {meas}", "hilar LNs"],
        neg=["lymphadenopathy", "pathologically enlarged lymph nodes", "lymph nodes in pathological size"], imp=["lymphadenopathy", "mediastinal lymphadenopathy"]),
    "Emphysema": dict(
        pos=["centrilobular emphysema in both upper lobes", "paraseptal emphysematous changes", "bullous emphysema in the {lobe}",
             "emphysematous changes in both lungs", "panlobular emphysema", "subpleural bullae in the {lobe}"],
        abbr=["CLE", "emphys changes", "COPD changes"],
        neg=["emphysema"], imp=["emphysema", "centrilobular emphysema"]),
    "Atelectasis": dict(
        pos=["subsegmental atelectasis in the {lobe}", "linear atelectasis in the {lobe}", "passive atelectasis at the {lr} base",
             "atelectatic changes in both lower lobes", "compressive atelectasis in the {lobe}", "plate atelectasis in the {lobe}"],
        abbr=["atx {ab_lobe}", "subseg atx"],
        neg=["atelectasis"], imp=["atelectasis"]),
    "Lung nodule": dict(
        pos=["a {meas} nodule in the {lobe}", "several millimetric nodules in both lungs", "a solid nodule in the {lobe} measuring {meas}",
             "a ground glass nodule in the {lobe}", "a subpleural nodule of {meas} in the {lobe}", "multiple pulmonary nodules, the largest {meas}"],
        abbr=["{meas} nod {ab_lobe}", "{ab_lobe} SPN", "GGN {ab_lobe}"],
        neg=["pulmonary nodule", "nodule", "mass or infiltrative lesion", "nodules"], imp=["pulmonary nodule", "lung nodules", "{lobe} nodule"]),
    "Lung opacity": dict(
        pos=["ground glass opacities in the {lobe}", "patchy opacities in both lungs", "an opacity in the {lobe}", "ground-glass densities in both lungs",
             "increased density in the {lobe}", "nodular ground glass opacities in the {lobe}"],
        abbr=["GGO {ab_lobe}", "b/l GGOs", "{ab_lobe} opac"],
        neg=["opacity", "ground glass opacity", "infiltration"], imp=["ground glass opacities", "lung opacity", "{lobe} opacities"]),
    "Pulmonary fibrotic sequela": dict(
        pos=["fibrotic sequelae in the {lobe}", "fibrotic bands in the {lobe}", "parenchymal scarring in the {lobe}", "sequelae fibrotic changes in both lungs",
             "fibroatelectatic changes in the {lobe}"],
        abbr=["fibrotic seq {ab_lobe}", "scarring {ab_lobe}"],
        neg=["fibrotic changes", "fibrosis"], imp=["fibrotic sequelae", "sequelae changes"]),
    "Pleural effusion": dict(
        pos=["{size} {side} pleural effusion", "{side} pleural effusions", "pleural fluid on the {lr}", "{size} effusion in the {lr} hemithorax",
             "{side} pleural effusion measuring {meas}"],
        abbr=["{ab_side} pl eff", "b/l effs"],
        neg=["pleural effusion", "effusion", "pleural effusion-thickening"], imp=["pleural effusion", "{side} pleural effusion"]),
    "Mosaic attenuation pattern": dict(
        pos=["mosaic attenuation pattern in both lungs", "mosaic perfusion in the {lobe}", "heterogeneous mosaic attenuation of the parenchyma",
             "areas of air trapping with mosaic pattern"],
        abbr=["mosaic pattern", "mosaic attn"],
        neg=["mosaic attenuation"], imp=["mosaic attenuation", "small airway disease"]),
    "Peribronchial thickening": dict(
        pos=["peribronchial thickening", "bronchial wall thickening in the {lobe}", "peribronchial cuffing in both lower lobes",
             "peribronchial interstitial thickening", "thickened bronchial walls in both lungs"],
        abbr=["BWT", "peribronch thick"],
        neg=["peribronchial thickening", "bronchial wall thickening"], imp=["peribronchial thickening", "bronchitis"]),
    "Consolidation": dict(
        pos=["consolidation in the {lobe}", "a consolidated area with air bronchograms in the {lobe}", "dense consolidation of the {lobe}",
             "consolidative changes in the {lobe}", "pneumonic consolidation in the {lobe}"],
        abbr=["consol {ab_lobe}", "{ab_lobe} consol"],
        neg=["consolidation", "pneumonic infiltration"], imp=["consolidation", "pneumonia"]),
    "Bronchiectasis": dict(
        pos=["cylindrical bronchiectasis in the {lobe}", "bronchiectatic changes in both lower lobes", "traction bronchiectasis",
             "varicose bronchiectasis in the {lobe}", "bronchiectasis in the {lobe}"],
        abbr=["BE {ab_lobe}", "bronchiect"],
        neg=["bronchiectasis"], imp=["bronchiectasis"]),
    "Interlobular septal thickening": dict(
        pos=["interlobular septal thickening", "smooth septal thickening in both lungs", "septal thickening in the {lobe}",
             "thickening of the interlobular septa", "crazy paving with septal thickening in the {lobe}"],
        abbr=["ILST", "septal thick"],
        neg=["septal thickening"], imp=["septal thickening", "interstitial thickening"]),
}

CT_NORMAL_SENTENCES = [  # the templated normal findings of a CT-RATE report, one per region
    "Trachea and both main bronchi are open.", "Mediastinal structures cannot be evaluated optimally as contrast material was not given.",
    "Thoracic esophagus calibration is normal and no significant wall thickening is detected.",
    "Upper abdominal organs included in the sections are normal.", "No lytic-destructive lesion is detected in the bone structures.",
    "Thoracic aorta diameter is normal.", "Main pulmonary artery diameter is normal.", "Both lungs are of normal volume.",
]
CT_NORMAL_IMP = ["No significant abnormality.", "Normal chest CT.", "No acute pathology in the thorax.", "Unremarkable thoracic CT.",
                 "No pathological finding."]
CT_INDICATIONS = ["cough", "dyspnea", "fever", "follow up of nodule", "chest pain", "weight loss", "preoperative screening", "covid-19 suspicion",
                  "known malignancy, staging", "hemoptysis"]
CT_EXTRA = ["Degenerative changes in the thoracic spine.", "Hypodense lesion in the liver, likely a cyst.", "Thyroid gland is normal.",
            "Minimal fat infiltration of the liver.", "Cholecystectomy clips are noted.", "Gynecomastia on the left."]
NEG_ABBR = {"Pneumothorax": ["PTX", "ptx"], "Pneumonia": ["PNA"], "Consolidation": ["consol"], "Edema": ["CHF", "overt CHF"],
            "Pleural Effusion": ["eff", "effs"], "Lymphadenopathy": ["LAP"], "Pleural effusion": ["pl eff"]}
HEDGE_WORDS = ["possible", "likely", "probable", "suspected", "cannot exclude", "concern for", "questionable", "suspicious for", "may represent"]
TEMPORAL_WORDS = {"same": ["unchanged", "stable", "persistent"], "better": ["improving", "decreasing", "improved"],
                  "worse": ["worsening", "increasing", "enlarging"], "new": ["new", "interval development of"]}
RESOLVED_WORDS = ["resolved", "interval resolution of", "no residual", "resolution of the"]
SHORTHAND = [  # a terse writer's abbreviations that leave the finding's own word in place
    ("right lower lobe", "RLL"), ("left lower lobe", "LLL"), ("right upper lobe", "RUL"), ("left upper lobe", "LUL"), ("right middle lobe", "RML"),
    ("Right lower lobe", "RLL"), ("Left lower lobe", "LLL"), ("Right upper lobe", "RUL"), ("Left upper lobe", "LUL"), ("Right middle lobe", "RML"),
    ("bilateral", "b/l"), ("Bilateral", "B/l"), (" with ", " w/ "), ("without", "w/o"), ("left ", "L "), ("right ", "R "), ("Left ", "L "),
    ("Right ", "R "), ("moderate", "mod"), ("small", "sm"), ("Small", "Sm"), ("is seen", "seen"), ("unchanged", "unchgd"),
    ("Unchanged", "Unchgd"), ("compared", "c/w"),
]
