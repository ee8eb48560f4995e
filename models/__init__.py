"""The four model families as scikit-learn estimators, their baselines and their metrics.

==========================  ====================================  ==========================================
family                      estimator (module)                    baselines (always reported beside it)
==========================  ====================================  ==========================================
propensity                  ``PropensityModel`` (models.gbm)      ``RFMClassifier`` (models.rfm),
                                                                  ``BGNBDClassifier`` (models.btyd)
churn                       ``ChurnModel`` (models.gbm)           same, on the churn label
next-best-offer             ``NextBestOfferModel``                ``BestSingleOfferBaseline``
                            (models.offpolicy)
send-time                   ``SendTimeModel`` (models.offpolicy)  ``FixedHourBaseline`` (10:00 local)
==========================  ====================================  ==========================================

Every estimator keeps scikit-learn's contract: ``__init__`` stores parameters, ``fit`` validates
(``models._validation``) and learns ``*_`` attributes, returns ``self``; ``predict_proba`` /
``predict``. The LightGBM-based ones hold a native Booster as ``booster_``. The off-policy models
take the logged ``propensity`` in ``fit`` and weight by its inverse; ``NextBestOfferModel.offer_values``
gives (n, K) expected net value per offer, ``SendTimeModel.hour_scores`` (n, H) open probability
per local hour. Metrics: ``models.metrics``.

Nothing heavy is imported here: import the submodule you need.
"""
