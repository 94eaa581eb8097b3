"""The small, deterministic world the synthetic agent tasks live in.

Cities with (synthetic) census figures, a document collection about them for the browser,
and the user functions (weather, currency, units, calendar) with exact implementations, so
the same code produces training observations and answers the agent's calls at evaluation.
Every figure is made up from a hash of the city name: it teaches tool use, not geography.

Held-out entities are fixed by rule (every fourth city, operands = 3 mod 7) so training data
never contains them. Training also gets 5,000 made-up cities: with the 36 real training cities
(or even 600 made-up ones) a small model memorises city names instead of copying them from the
question (measured: docs/experiments.md, 2026-11-29), and a memorised name is never a held-out one.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

# the collection write_documents() writes and `openglm agent --docs` searches by default
from openglm.embedded import DOCS_DIR

# (English, Chinese, country EN, country ZH)
_CITIES = [
    ("Beijing", "北京", "China", "中国"), ("Shanghai", "上海", "China", "中国"),
    ("Guangzhou", "广州", "China", "中国"), ("Shenzhen", "深圳", "China", "中国"),
    ("Chengdu", "成都", "China", "中国"), ("Hangzhou", "杭州", "China", "中国"),
    ("Wuhan", "武汉", "China", "中国"), ("Xi'an", "西安", "China", "中国"),
    ("Nanjing", "南京", "China", "中国"), ("Tianjin", "天津", "China", "中国"),
    ("Chongqing", "重庆", "China", "中国"), ("Suzhou", "苏州", "China", "中国"),
    ("Qingdao", "青岛", "China", "中国"), ("Xiamen", "厦门", "China", "中国"),
    ("Kunming", "昆明", "China", "中国"), ("Harbin", "哈尔滨", "China", "中国"),
    ("Changsha", "长沙", "China", "中国"), ("Zhengzhou", "郑州", "China", "中国"),
    ("Dalian", "大连", "China", "中国"), ("Shenyang", "沈阳", "China", "中国"),
    ("Tokyo", "东京", "Japan", "日本"), ("Osaka", "大阪", "Japan", "日本"),
    ("Seoul", "首尔", "South Korea", "韩国"), ("Busan", "釜山", "South Korea", "韩国"),
    ("Singapore", "新加坡", "Singapore", "新加坡"), ("Bangkok", "曼谷", "Thailand", "泰国"),
    ("Hanoi", "河内", "Vietnam", "越南"), ("Jakarta", "雅加达", "Indonesia", "印度尼西亚"),
    ("Delhi", "德里", "India", "印度"), ("Mumbai", "孟买", "India", "印度"),
    ("London", "伦敦", "United Kingdom", "英国"), ("Paris", "巴黎", "France", "法国"),
    ("Berlin", "柏林", "Germany", "德国"), ("Madrid", "马德里", "Spain", "西班牙"),
    ("Rome", "罗马", "Italy", "意大利"), ("Vienna", "维也纳", "Austria", "奥地利"),
    ("Moscow", "莫斯科", "Russia", "俄罗斯"), ("Cairo", "开罗", "Egypt", "埃及"),
    ("Nairobi", "内罗毕", "Kenya", "肯尼亚"), ("Lagos", "拉各斯", "Nigeria", "尼日利亚"),
    ("Toronto", "多伦多", "Canada", "加拿大"), ("Chicago", "芝加哥", "United States", "美国"),
    ("Seattle", "西雅图", "United States", "美国"), ("Boston", "波士顿", "United States", "美国"),
    ("Mexico City", "墨西哥城", "Mexico", "墨西哥"), ("Lima", "利马", "Peru", "秘鲁"),
    ("Sydney", "悉尼", "Australia", "澳大利亚"), ("Auckland", "奥克兰", "New Zealand", "新西兰"),
]


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class City:
    en: str
    zh: str
    country_en: str
    country_zh: str
    heldout: bool
    synthetic: bool = False

    @property
    def pop2010(self) -> int:
        return 300_000 + (_h("pop", self.en) % 9_000) * 1_000

    @property
    def pop2020(self) -> int:
        growth = (_h("growth", self.en) % 450 - 50) / 1000  # -5% .. +40% over the decade
        return round(self.pop2010 * (1 + growth) / 1000) * 1000

    def name(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


REAL_CITIES = [City(*c, heldout=(i % 4 == 3)) for i, c in enumerate(_CITIES)]

# Made-up training cities. Their names must be unpredictable, or the model learns to write
# likely-looking names instead of copying (measured: with 52 place-name characters it wrote
# "平清人口" for 维也纳): English ones are random sounds in consonant-vowel rhythm, clusters such as
# "Sh" and "Zh" among them (with single letters only, a 2026-11-30 model never copied the "Sh" of
# Shenyang or Shenzhen: it wrote "革enyang", as real names start with pieces no made-up one had), Chinese ones
# random characters among the 2,000 most frequent in the sample corpus (so each is one token of
# a tokenizer learned on it; rarer ones split into bytes, much harder to copy). With the top 800
# only, a 2026-11-29 model never copied 沈阳 or 雅加达 (0 of 8 first actions; 沈 and 雅 rank past
# 800; docs/experiments.md). No name contains a real one or sits inside one.
_CONSONANTS = list("bcdfghjklmnpqrstvwxyz") + ["sh", "ch", "zh", "th", "ng", "st", "br", "tr", "kr", "gu", "qi"]
_VOWELS = list("aeiou") + ["ou", "ai", "ia", "ua", "ei", "en", "an"]
_COMMON_HAN = (
    "的一国在了中人是有和大年不为会业上发这作要地个出工行经以家新民他来到我部日成生对进们市全多时主政本氓"
    "产者实展方长开理学建动同高于下重月关力现公用忙分电加社区文自报济制体过化合能定就面前天事与等后场得说"
    "可法机好记员也美之而子外资设问总农平务明将小从十其提北利莽华各内企当里代种心元度金表品都改万党通强委"
    "目使着水军两起盲题系入科所位去些京活导道三特次并结最如向已还世第管基名领术技应增正交任今意点立持统解"
    "很省安性南保程西海路教此情组调间由司量队取东及期联共界决治义达门把猫书院因战村干然更相张广据议团看收"
    "计革步局山比育无口放但信数先件项际老二集志求物府办风指近规形论认亚果手式价话难众想举族五少格职研商江"
    "处斯车常质克原别被运深精困拉没受女观做级李样条变创节气回图传给录标至群只剧那造见施推支首选又城思优你"
    "几服央协整赂神四台争示投接视乡疇县茅周单它纪反流片专查住构头极效参贫续百究布证王尔势疆马积走德营每禄"
    "该春房或真必历需副艺户感身再织坚费灾何非影己亿率型光庐完快线陆癟供史许助转林知才演严列打策确益清望潞"
    "色楼具融根赛么始况罗河识值带引医乐席权谈批空州存象直约港准兴易责核命九英致功炉送模防银游连股米儿八消"
    "环范球青划备落讯巴切包隆采花伊刘版则获字稳越类案仅石较源告段客响请访速士继息阿爱境维钱双往露评她热警"
    "款负素驴断护满未富讲照复香武篓器低校远排师友考陈须依声希失洲宣千厂镇茫初亲掳油注容良便足泽白域验让俄"
    "层配贸财均土突晚健抓善边占习显欧即红份础养尼居黄且斗写检古律太飞夫余执读按救销荣届普监培装货波紧汇闻"
    "随促限奖茂尽云减岗震癡态努除扶略置劳围兵陇承破食献阳景什欢充雪愿挥福却念终铁官网降迎站言试田属摄帮瓣"
    "旅险班鹿矇菜临音六病税岁票像温曾称独措号预令苦火察离编底宁修树控吃针担适危换康补伟药喜币眼待额舞歌升"
    "算超半龙章故画七早丁苏介丰料卫售戮候印购兰训阶例买驻竞卢密胜留听派扩互庆翻附邓鲁仍止塔星探击轻哈恩审"
)
_MORE_HAN = (  # the next 1,200 (ranks 801-2,000): still one token each in the nano tokenizer
    "牌藏久座著顿索孩状馆典巨犯湖纳汉绍礼搂语害刚移奋烈绝抗午败胡冬航庭贵戏激逐虎括繡述测拥幅觉某差园穡播谢脱"
    "损够罪秀急船吉室黑压兼盟卡召吴矿短刻彩停彻雨靠材署私既宏绩归顺永卖讨脑序桥奥草泰贯否祖另顾艰冷繁韩尚妇贷"
    "夜映找拿玉店湾免纷祝钟盛库邮曲缺呼威束堂旦街套假岸征笔鲜盘陋赞木遇坦吸娄搞予招践督疗捐鼓虽违暖杂课细衣津"
    "杨您贡冲粮齐母腐码瑞退练男伤判扬债甚慰简左童伍洋托旧汽毛块徐雷拢钢孙厅综登券析廉宝乎卤鹏角诉川遍亮障朝旗"
    "固沙篮冰丽守振贺赵叶怎误输簪仪轮启避架衡酒季错死似励寒血翹饭贝灯拍付签莫含梁右朱野聚簧篇散松倒伯刊漏符借"
    "禁宗趋般哥拓追厚怀攻跌亩雄授累夏绿博垄盾灵休蒙寻忘味勤伴晓污谁坐迅笑萨泳奇锦唱琛握封异途援纸键壮黎尤朋辉"
    "吨泛悉延跨弱幕潮跃牛扎烟麓昌缩森毒圣涉载郑佳貌勒择储杰订坏呢秘冠澳勇誉忠板秋静筑恢智邦朗筹惠庄植若叫背答"
    "岛末函沿煤微茶繙虑疑宜诺鱼碌杯射沈乌端络芦乱夺染宾抵享挂伙摆塞浪敬毕楚瓦零珍操肉肯迹句尊辆熟申缓挑哪诚昆"
    "洪穿账癒父赶绕罈距耳竟凡棉闭透页遗媒恐董默洁屋顶抢谋阵掌珠敏骨栏词渐瓊幸硬盖個邀祥峰殊弟彭赠斤沉慢繚矛肥"
    "惊薄箱迫鉴概贴辛撤琴赴暴們宽姓迈辞戴冒迟痛偿荡棋伪遭奶梦敢润胞曼径穷涨趣梅辽浩轨丹跟抽盗刑圆脚询拜呈醒释"
    "爷莱簣雅亏胀倡迪舍仁這君患餐亡偏乘瞻虚裁妈伦倾滑吗纯乏潜荒册怕档簿發侨敌唯猪爲聶涛拒麦寄截井纽阔昨诞窗跳"
    "掉摩甘埃秦泉租阅哲罚岚赏诗坡竹倍寿谓伐灭瞿會奉唐辖洛郭牙穠龄迁杀渡坛崇皮弃谷宋诸净奔谊揭估凝漫览浓簞帜佛"
    "描替喝岳颁乃俗卷忧劲欣返孔循蔬递補乔桑遵惯渠忽扫浙折氛嘉添陷跑辑恶赔孤阻械软菲籍弹纺赖杜徽淮姆夕仙秩迷毫"
    "燃废羊爆墨臣吧旨刀赫池疾肃蓝潘译洗宇闲淡吁娘触鸣晨丝俊塑鈥宫晶隐牧剂內奏豪残勃阴锁胆礎钦凤圳晋兑稿舆锡甲"
    "蛋畅宅横膨瞼晤佩婚艾陶刺竅饱冻抱芳寺脸燕纠暂峡墙玩艳姐怖铜浮频辈巩腾滨孟挖巧裕泪犹鸡侧滋铺侵贾宪洞慧镜锋"
    "姑拖殖柱欲驾勘饮颇屏阁時踏姜旁桌肖岭摇冯耶允瞽忆吕拔尝曹熊扰摊番闹傅韦岩驶混徒開繕沟劣床桂丛簡職繞懈苗鸟"
    "辟焦偷敦斌幼拨诊牢氏剑雕毅隔蓉垃贬盼竄狠尉袁捷叹泥覆涌址虏旋睡役汪妥旱猛凭箭廷厦朴柏尾圾棚對凌履厉碍耀郎"
    "扣毁赤枚湘仿详穆啊秒稻愈穢吾盈闪汗枪踞缘狂捕莲鸿牵割玛赢凯耕磊搭尖押卓绘壁亦旺裂贪欠炼偶衰烂懂拟纵兹孕問"
    "煌邹邻缴驱妻妹咨耗嫌泡糧纲陪湿绪榜粉逢尘胸兄麻兆溪摸澜堆恒挤削堡扭皇摘拼飘苍翼柳聘泊啡携姿磨疏颜袋慎杭帝"
    "帐贿郊荷粗鼠贩篷弄串彼碧咖衷虹辅峻悲撒仓框愁渔舒袭悠掘滩稀邱彰蔡填吹涵剩玲脉烧蓄症桶淘題仰滚暗娱旬伸廊碼"
    "宿畜俱奠蒂勋幽蹈庙拆讼禮揽饰伏挺妙堵搬惜怪铢雁滞嘴浦晴侯決硕牲敲钻贤沃骑乳昔崔炸堪颖挪耐碑寨陕洒搏脏巡插"
    "垦恰逃碗員繒胁逝顽御滴菊陵嫩魅舶妍於將柴抑盆蒋骗魂诱枝肩匆汤啤谭绵刷瓜腊弥滥坝踪辩慕缆斜烦娜笼颗圈粒遥攀"
    "狱轰悄鹤唤漂罕歧昭冀剪悟炮雾撑忍竣糖凉過當來弦阐剥歉氧羽巾皆甫腰脆沫岂柜辰並應夸镕龚霞披杆蕾豆灌爸亭帅抬"
    "侦锭珀佐"
)


def _synthetic_cities(n: int) -> list[City]:
    # Characters of the population page's own words would make BM25 rank other cities' pages first.
    page_words = "是的一座城市年人口普查常住为" + "".join(c[3] for c in _CITIES)
    han = [ch for ch in _COMMON_HAN + _MORE_HAN if ch not in page_words]
    real = [name for c in _CITIES for name in c[:2]]
    countries = sorted({(c[2], c[3]) for c in _CITIES})
    out, seen, i = [], set(), 0
    while len(out) < n:
        k, i = _h("synthetic-city", i), i + 1
        sounds = [_VOWELS if j % 2 else _CONSONANTS for j in range(3 + k % 4)]
        letters = [units[(k >> (6 * j + 2)) % len(units)] for j, units in enumerate(sounds)]
        en = "".join(letters).capitalize()
        zh = "".join(han[(k >> (12 * j + 8)) % len(han)] for j in range(2 + (k >> 60) % 2))
        if en in seen or zh in seen or any(a in b or b in a for a in (en, zh) for b in real):
            continue
        seen.update((en, zh))
        out.append(City(en, zh, *countries[k % len(countries)], heldout=False, synthetic=True))
    return out


CITIES = REAL_CITIES + _synthetic_cities(5000)


@functools.cache
def cities(split: str) -> tuple[City, ...]:
    """The split's cities (cached: every task draws from them)."""
    return tuple(c for c in CITIES if c.heldout == (split == "heldout"))


def operand_ok(n: int, split: str) -> bool:
    """Held-out operands are exactly those = 3 (mod 7): disjoint from training by rule."""
    return (abs(n) % 7 == 3) == (split == "heldout")


# ---- the document collection the browser searches ---------------------------------
def documents(split: str | None = None) -> list[dict]:
    """One population page per city and language, plus distractor pages on other topics.

    split="train" leaves out the held-out cities' pages (so not even a search result in the
    training data names them) and adds the made-up cities'; None or "heldout" is the shipped
    collection: every real city.
    """
    docs = []
    for c in CITIES:
        if (split == "train" and c.heldout) or (split != "train" and c.synthetic):
            continue
        slug = c.en.lower().replace(" ", "-").replace("'", "")
        docs.append({"id": f"{slug}-population-en", "title": f"{c.en} population",
                     "url": f"https://cities.example.org/{slug}/population",
                     "text": f"{c.en} is a city in {c.country_en}. The census counted {c.pop2010} residents "
                             f"in 2010 and {c.pop2020} residents in 2020."})
        docs.append({"id": f"{slug}-population-zh", "title": f"{c.zh}人口",
                     "url": f"https://cities.example.org/zh/{slug}/population",
                     "text": f"{c.zh}是{c.country_zh}的一座城市。2010年人口普查常住人口为{c.pop2010}人，"
                             f"2020年为{c.pop2020}人。"})
        if c.synthetic:  # population pages only: keeps the training index small
            continue
        docs.append({"id": f"{slug}-travel-en", "title": f"Travelling to {c.en}",
                     "url": f"https://travel.example.org/{slug}",
                     "text": f"{c.en} in {c.country_en} has museums, parks and markets. Spring and autumn are "
                             "the best seasons to visit."})
    return docs


def write_documents(folder: str | Path = DOCS_DIR, split: str | None = None) -> Path:
    """One Markdown file per document, with the title/url header lines LocalSearch reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for d in documents(split):
        (folder / f"{d['id']}.md").write_text(f"title: {d['title']}\nurl: {d['url']}\n\n{d['text']}\n",
                                             encoding="utf-8")
    return folder


# ---- user functions: schemas and exact implementations -----------------------------
FUNCTION_SCHEMAS = {
    "get_weather": {
        "description": "Get the weather forecast of a city on a date",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "city name"},
            "date": {"type": "string", "format": "date", "description": "date as YYYY-MM-DD"}},
            "required": ["city", "date"]}},
    "convert_currency": {
        "description": "Convert an amount of money from one currency to another",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"},
            "from_currency": {"type": "string", "description": "ISO code, e.g. USD"},
            "to_currency": {"type": "string", "description": "ISO code, e.g. CNY"}},
            "required": ["amount", "from_currency", "to_currency"]}},
    "convert_units": {
        "description": "Convert a length or mass between units",
        "parameters": {"type": "object", "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string", "enum": ["km", "mile", "m", "foot", "kg", "pound"]},
            "to_unit": {"type": "string", "enum": ["km", "mile", "m", "foot", "kg", "pound"]}},
            "required": ["value", "from_unit", "to_unit"]}},
    "day_of_week": {
        "description": "Tell which day of the week a date is",
        "parameters": {"type": "object", "properties": {
            "date": {"type": "string", "format": "date", "description": "date as YYYY-MM-DD"}},
            "required": ["date"]}},
}

RATES_PER_USD = {"USD": 1.0, "CNY": 7.2, "EUR": 0.92, "JPY": 150.0, "GBP": 0.79, "KRW": 1350.0}
UNIT_IN_BASE = {"km": 1000.0, "m": 1.0, "mile": 1609.344, "foot": 0.3048, "kg": 1.0, "pound": 0.45359237}
UNIT_KIND = {"km": "length", "m": "length", "mile": "length", "foot": "length", "kg": "mass", "pound": "mass"}
WEATHER = [("sunny", "晴"), ("cloudy", "多云"), ("light rain", "小雨"), ("windy", "大风"), ("snow", "雪")]


def function_tool(name: str) -> dict:
    """The tool entry for a system message, in GLM-4's (OpenAI-style) function format."""
    return {"type": "function", "function": {"name": name, **FUNCTION_SCHEMAS[name]}}


def get_weather(city: str, date: str) -> dict:
    dt.date.fromisoformat(date)
    k = _h("weather", city, date)
    high = 5 + k % 25
    return {"city": city, "date": date, "condition": WEATHER[k % len(WEATHER)][0], "high_c": high,
            "low_c": high - 3 - (k >> 8) % 8}


def convert_currency(amount: float, from_currency: str, to_currency: str) -> dict:
    for code in (from_currency, to_currency):
        if code not in RATES_PER_USD:
            raise ValueError(f"unknown currency {code!r}; known: {', '.join(RATES_PER_USD)}")
    result = round(amount / RATES_PER_USD[from_currency] * RATES_PER_USD[to_currency], 2)
    return {"amount": amount, "from_currency": from_currency, "to_currency": to_currency, "result": result}


def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    if UNIT_KIND.get(from_unit) != UNIT_KIND.get(to_unit):
        raise ValueError(f"cannot convert {from_unit} to {to_unit}")
    return {"value": value, "from_unit": from_unit, "to_unit": to_unit,
            "result": round(value * UNIT_IN_BASE[from_unit] / UNIT_IN_BASE[to_unit], 3)}


def day_of_week(date: str) -> dict:
    return {"date": date, "weekday": dt.date.fromisoformat(date).strftime("%A")}


FUNCTIONS = {"get_weather": get_weather, "convert_currency": convert_currency,
             "convert_units": convert_units, "day_of_week": day_of_week}
