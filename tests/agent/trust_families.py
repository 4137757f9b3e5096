"""The model families the default trust list must admit, fitted small.

The tests dump each with skops and expect no untrusted type. Run as a script to print every
type the families need (how ``handoff_agent.trust.DEFAULT_TRUSTED`` was derived; the list in
that module is reviewed by hand, never generated at run time):

    python tests/agent/trust_families.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def tabular(n: int = 200, seed: int = 0):
    """Numbers with a gap, and a text category: what a churn table looks like."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "spend": rng.gamma(2.0, 50.0, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
        }
    )
    X.loc[X.index[::17], "spend"] = np.nan
    y = ((X["age"] > 40) ^ (X["plan"] == "pro")).astype(int)
    return X, y


def numeric(n: int = 200, seed: int = 0, classes: int = 2):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    y = (X["a"] * 3 + X["b"]).rank().astype(int) * classes // (n + 1)
    return X, y


def texts(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    good = ["great", "fast", "friendly", "cheap", "clear"]
    bad = ["slow", "rude", "broken", "late", "costly"]
    y = rng.integers(0, 2, n)
    words = [" ".join(rng.choice(good if t else bad, 4)) + " service" for t in y]
    return pd.Series(words, name="review"), pd.Series(y, name="happy")


def linear_pipeline():
    """LogisticRegression after ColumnTransformer + OneHotEncoder + StandardScaler."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = tabular()
    pre = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
                ["age", "spend"],
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(X, y), X, y


def ordinal_pipeline():
    """The other encoders, imputers and scalers, ahead of a regressor."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, OrdinalEncoder, RobustScaler

    X, _ = tabular()
    y = X["age"] * 2.0
    pre = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [
                        (
                            "gaps",
                            FeatureUnion(
                                [
                                    ("fill", SimpleImputer(strategy="median")),
                                    ("flag", MissingIndicator()),
                                ]
                            ),
                        ),
                        ("minmax", MinMaxScaler()),
                        ("robust", RobustScaler()),
                        ("maxabs", MaxAbsScaler()),
                    ]
                ),
                ["age", "spend"],
            ),
            (
                "cat",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ["plan"],
            ),
        ],
        remainder="drop",
    )
    return Pipeline([("pre", pre), ("reg", Ridge())]).fit(X, y), X, y


def linear_models():
    from sklearn.linear_model import (
        ElasticNet,
        Lasso,
        LinearRegression,
        LogisticRegression,
        Ridge,
        RidgeClassifier,
        SGDClassifier,
        SGDRegressor,
    )

    X, y = numeric(classes=3)
    out = [LogisticRegression().fit(X, y), RidgeClassifier().fit(X, y)]
    out.append(SGDClassifier(random_state=0).fit(X, y))
    target = X["a"] * 2 - X["c"]
    for cls in (LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor):
        out.append(cls().fit(X, target))
    return out


def trees_and_forests():
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    X, y = numeric(classes=2)
    X3, y3 = numeric(classes=3)
    target = X["a"] * 2 - X["c"]
    small = {"n_estimators": 5, "random_state": 0}
    return [
        DecisionTreeClassifier(random_state=0).fit(X, y),
        DecisionTreeRegressor(random_state=0).fit(X, target),
        RandomForestClassifier(**small).fit(X, y),
        RandomForestRegressor(**small).fit(X, target),
        ExtraTreesClassifier(**small).fit(X3, y3),
        ExtraTreesRegressor(**small).fit(X, target),
        GradientBoostingClassifier(**small).fit(X, y),
        GradientBoostingClassifier(**small).fit(X3, y3),
        GradientBoostingRegressor(**small).fit(X, target),
    ]


def hist_gradient_boosting():
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X, y = numeric(classes=2)
    X3, y3 = numeric(classes=3)
    Xt, yt = tabular()
    Xt = Xt.astype({"plan": "category"})
    import sklearn

    if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 4):
        categorical = "from_dtype"
    else:  # scikit-learn < 1.4, the declared floor: a mask over integer codes
        categorical = [c == "plan" for c in Xt.columns]
        Xt = Xt.assign(plan=Xt["plan"].cat.codes)
    return [
        HistGradientBoostingClassifier(max_iter=5).fit(X, y),
        HistGradientBoostingClassifier(max_iter=5).fit(X3, y3),
        HistGradientBoostingClassifier(max_iter=5, categorical_features=categorical).fit(Xt, yt),
        HistGradientBoostingRegressor(max_iter=5).fit(X, X["a"] * 2.0),
    ]


def text_pipelines():
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import Pipeline

    X, y = texts()
    return [
        Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(X, y),
        Pipeline(
            [
                ("tfidf", TfidfVectorizer(ngram_range=(1, 2), stop_words="english")),
                ("clf", LogisticRegression()),
            ]
        ).fit(X, y),
        Pipeline([("count", CountVectorizer()), ("nb", MultinomialNB())]).fit(X, y),
    ]


def xgboost_models():
    import xgboost as xgb

    X, y = numeric(classes=2)
    X3, y3 = numeric(classes=3)
    small = {"n_estimators": 5, "max_depth": 2}
    return [
        xgb.XGBClassifier(**small).fit(X, y),
        xgb.XGBClassifier(**small).fit(X3, y3),
        xgb.XGBRegressor(**small).fit(X, X["a"] * 2.0),
    ]


def lightgbm_models():
    import lightgbm as lgb

    X, y = numeric(classes=2)
    X3, y3 = numeric(classes=3)
    small = {"n_estimators": 5, "num_leaves": 4, "min_child_samples": 5, "verbose": -1}
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbose": -1}, lgb.Dataset(X, y), 5
    )
    return [
        lgb.LGBMClassifier(**small).fit(X, y),
        lgb.LGBMClassifier(**small).fit(X3, y3),
        lgb.LGBMRegressor(**small).fit(X, X["a"] * 2.0),
        booster,
    ]


FAMILIES = {
    "linear_pipeline": lambda: [linear_pipeline()[0]],
    "ordinal_pipeline": lambda: [ordinal_pipeline()[0]],
    "linear_models": linear_models,
    "trees_and_forests": trees_and_forests,
    "hist_gradient_boosting": hist_gradient_boosting,
    "text_pipelines": text_pipelines,
    "xgboost": xgboost_models,
    "lightgbm": lightgbm_models,
}


if __name__ == "__main__":
    import skops.io as sio

    from handoff_agent.trust import needed_types

    for family, build in FAMILIES.items():
        names = set()
        for model in build():
            names |= needed_types(sio.dumps(model))
        print(f"# {family}")
        for name in sorted(names):
            print(f'    "{name}",')
